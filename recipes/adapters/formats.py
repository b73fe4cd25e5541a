"""python -m recipes.data adapt {imagewikiqa,vmcbench,mmmu,mllm-cl,llava-instruct,vqa,class-folder} --input PATH --out FILE

Adapters from public benchmark and conversation formats to the data contract
(``recipes.data.schema``: MCQ and free-form records in one parquet format):

- ``imagewikiqa``: jsonl records ``{image, text, label, wiki, classname}``; ``text`` is the
  question, then lettered option lines ("A. ..."), then an instruction line ("Choose A, B, C,
  or D."); ``label`` is the answer letter (or a 0-based index); ``image`` is a path relative to
  ``--image-root`` (default: the jsonl's folder). ``wiki``, ``classname`` and the instruction
  go to ``meta`` (the class-label distractor probe needs ``classname``).
- ``vmcbench``: columns ``question, A, B, C, D, answer, category, image`` (parquet with
  Hugging Face image structs, VLMEvalKit TSV with base64 images, or jsonl); ``category`` and
  ``index`` go to ``meta``.
- ``mmmu``: the multiple-choice questions of MMMU (``question_type == "multiple-choice"``;
  ``options`` is a Python list literal; images in ``image_1`` .. ``image_7``). Open-ended
  questions are left out and counted. A question keeps every image (``image`` then
  ``extra_images``) and its ``<image k>`` placeholders, which the collator turns into the
  model family's image tokens in place.
- ``mllm-cl``: one split of an MLLM-CL domain (``RS/train.json``, ``RS/test.json``, ...; the
  layout of the paper's §5 benchmark): train rows are LLaVA records ``{id, image, conversations:
  [{from: human, value: "<image>\\nquestion\\nA. ..."}, {from: gpt, value: answer}]}``, test rows
  ``{question_id, image, text, answer}``; images are paths relative to ``--image-root`` (default:
  the json's folder). Every row is kept: multiple-choice questions (lettered option lines or
  inline "Options: A. ... B. ..."; the answer a letter, "B. text" or an option's text) become
  MCQ rows, the others free-form rows scored by the domain's matcher (``--domain``, default the
  folder name: RS -> rs, Med -> med, AD -> ad, Sci -> sci, Fin -> fin). The summary counts
  rows per kind.
- ``llava-instruct``: LLaVA-Instruct / LLaVA-665K in the ShareGPT layout, a .json list or
  .jsonl of ``{id, image, conversations: [{from: human|gpt, value}]}``; ``image`` is a path
  (or a list of them) or absent for text-only rows; ``<image>`` marks where it goes. Each
  conversation becomes one free-form record: the last human turn and its gpt reply are the
  question and answer, the turns before the history (the loss covers every gpt turn).
- ``vqa``: free-form VQA rows (OCR-VQA style) ``{id, image, question, answer}`` (or
  ``answers``, a list whose first entry is kept; ``images``, a list).
- ``class-folder``: a class-labelled image folder as "What is this?" questions (distractors
  random, or CLIP-similar with ``--clip``; see ``recipes.adapters.class_folder``).

    from recipes.adapters.formats import adapt
    report = adapt("imagewikiqa", "imagewikiqa.jsonl", "imagewikiqa.parquet")
    print(report.summary())

Source files are read by ``recipes.adapters.rows``; the converters of the multiple-choice
formats are ``recipes.adapters.mcq``, those of the formats with free-form rows
``recipes.adapters.freeform``. Rows that cannot be adapted raise ``RecordFormatError`` naming
the input file, the row and the problem; with ``skip_bad=True`` (``--skip-bad``) they are
left out and counted. A file that gives no rows at all is an error, never an empty output.
``--matcher`` names the scorer of ``llava-instruct`` and ``vqa`` rows (default ``exact``).
"""

from __future__ import annotations

import functools
import os
import posixpath
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from recipes.adapters.class_folder import FOLDER_QUESTION, ClassFolder, build_class_mcq
from recipes.adapters.freeform import (
    MLLM_CL_MATCHERS,
    llava_instruct_record,
    mllm_cl_domain,
    mllm_cl_record,
    vqa_record,
)
from recipes.adapters.mcq import imagewikiqa_record, mmmu_record, vmcbench_record
from recipes.adapters.rows import ExcludedRow, iter_source_rows, source_row_count
from recipes.common.progress_bar import progress_bar
from recipes.common.storage import parent_dir
from recipes.data.schema import (
    FREEFORM_KIND,
    MATCHER_NAMES,
    MCQ_KIND,
    BadRow,
    RecordFormatError,
    RowValidator,
    records_to_table,
)
from recipes.data.writers import check_writable, write_records

FORMATS = ("imagewikiqa", "vmcbench", "mmmu", "mllm-cl", "llava-instruct", "vqa", "class-folder")
"""Formats ``adapt`` understands."""


@dataclass(frozen=True)
class Adapted:
    """The result of adapting one source file."""

    input: str
    """The source file or folder."""
    table: pa.Table | None
    """The MCQ rows (None for class folders, which are written batch by batch)."""
    rows: int
    """Number of MCQ rows."""
    bad: tuple[BadRow, ...] = ()
    """Source rows that could not be adapted (skipped with ``skip_bad``)."""
    excluded: dict[str, int] = field(default_factory=dict)
    """Valid source rows left out on purpose, counted by reason."""
    kinds: dict[str, int] = field(default_factory=dict)
    """Rows per kind (``mcq``, ``freeform``) for formats that give both."""

    def summary(self) -> str:
        if self.kinds:
            per_kind = ", ".join(f"{self.kinds.get(kind, 0)} {kind}" for kind in (MCQ_KIND, FREEFORM_KIND))
            parts = [f"{self.input}: {self.rows} rows ({per_kind})"]
        else:
            parts = [f"{self.input}: {self.rows} questions"]
        parts += [f"{count} {reason} left out" for reason, count in sorted(self.excluded.items())]
        if self.bad:
            parts.append(f"{len(self.bad)} bad rows skipped")
        return "; ".join(parts)


CONVERTERS: dict[str, Callable[..., dict]] = {
    "imagewikiqa": imagewikiqa_record,
    "vmcbench": vmcbench_record,
    "mmmu": mmmu_record,
    "mllm-cl": mllm_cl_record,
    "llava-instruct": llava_instruct_record,
    "vqa": vqa_record,
}

FREEFORM_FORMATS = ("mllm-cl", "llava-instruct", "vqa")
"""Formats whose rows may be free-form (their converters take the free-form rows' ``matcher``)."""


def adapt_file(
    fmt: str,
    path: str | os.PathLike,
    *,
    source: str | None = None,
    image_root: str | None = None,
    skip_bad: bool = False,
    matcher: str | None = None,
    domain: str | None = None,
) -> Adapted:
    """Adapt a source file of format ``fmt`` (any of ``CONVERTERS``) to a table of the contract.

    ``matcher`` scores the free-form rows of ``llava-instruct`` and ``vqa`` (default ``exact``);
    ``mllm-cl`` uses its ``domain``'s matcher (default: the domain the path or source names).
    """
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown format {fmt!r}; file formats are {', '.join(CONVERTERS)}")
    path = str(path)
    convert = CONVERTERS[fmt]
    base_dir = str(image_root) if image_root is not None else parent_dir(path)
    source = source or fmt
    if fmt == "mllm-cl":
        if domain is not None and domain not in MLLM_CL_MATCHERS:
            raise ValueError(f"domain {domain!r} is not an MLLM-CL domain ({', '.join(MLLM_CL_MATCHERS)})")
        matcher = MLLM_CL_MATCHERS[domain or mllm_cl_domain(path, source)]
    if matcher is not None and matcher not in MATCHER_NAMES:
        raise ValueError(f"matcher {matcher!r} is not one of {', '.join(MATCHER_NAMES)}")
    if fmt in FREEFORM_FORMATS:
        convert = functools.partial(convert, matcher=matcher or "exact")
    records, locations, bad, excluded = [], [], [], Counter()
    rows = progress_bar(
        iter_source_rows(path),
        total=lambda: source_row_count(path),
        desc=f"adapting {posixpath.basename(path)}",
        unit="row",
    )
    for location, row in rows:
        try:
            if isinstance(row, ValueError):
                raise row
            if not isinstance(row, dict):
                raise ValueError(f"row is not an object (got {type(row).__name__})")
            records.append(convert(row, location, source=source, base_dir=base_dir))
            locations.append(location)
        except ExcludedRow as excluded_row:
            excluded[excluded_row.reason] += 1
        except (ValueError, OSError) as error:
            row_id = row.get("id") if isinstance(row, dict) else None
            bad.append(BadRow(location, None if row_id is None else str(row_id), str(error)))
    if not records and not bad:
        raise RecordFormatError(
            path, problem="has no rows" + (f" to adapt ({_excluded_text(excluded)} left out)" if excluded else "")
        )
    table = records_to_table(records)
    contract_bad = RowValidator().check(table, 0, locations)
    bad += contract_bad
    if bad and not skip_bad:
        raise RecordFormatError(path, bad)
    if contract_bad:
        dropped = {b.row for b in contract_bad}
        table = table.filter(pa.array([row not in dropped for row in range(table.num_rows)]))
    if table.num_rows == 0:
        raise RecordFormatError(path, problem=f"has no rows left to write ({len(bad)} bad rows skipped)")
    kinds = {}
    if fmt in FREEFORM_FORMATS:
        counted = Counter(table.column("kind").to_pylist()) if "kind" in table.column_names else Counter()
        kinds = {MCQ_KIND: table.num_rows - counted[FREEFORM_KIND], FREEFORM_KIND: counted[FREEFORM_KIND]}
    return Adapted(path, table, table.num_rows, tuple(bad), dict(excluded), kinds)


def _excluded_text(excluded: Counter) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in excluded.items())


def adapt(
    fmt: str,
    input_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    source: str | None = None,
    image_root: str | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    clip_path: str | None = None,
    seed: int = 0,
    question: str = FOLDER_QUESTION,
    names_file: str | None = None,
    matcher: str | None = None,
    domain: str | None = None,
) -> Adapted:
    """Adapt ``input_path`` (format ``fmt``) and write the parquet ``out``."""
    check_writable(out, overwrite)
    if fmt == "class-folder":
        folder = ClassFolder.scan(input_path, names_file=names_file)
        rows = build_class_mcq(
            folder, out, question=question, clip_path=clip_path, seed=seed, source=source, overwrite=overwrite
        )
        return Adapted(str(input_path), None, rows)
    adapted = adapt_file(
        fmt,
        input_path,
        source=source or posixpath.splitext(posixpath.basename(str(out)))[0],
        image_root=image_root,
        skip_bad=skip_bad,
        matcher=matcher,
        domain=domain,
    )
    write_records(adapted.table, out, overwrite=overwrite)
    return adapted
