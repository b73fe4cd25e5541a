"""Class-labelled image folders and the classification MCQs built from them.

A class folder is ``root/<class_dir>/<image files>`` (ImageNet, ImageNetV2, Flowers102,
Caltech101, StanfordCars layouts), or a class list plus a files list. Class names come from
the directory names ("Faces_easy" -> "Faces easy") or from a names file:

- text, one class per line: ``<class_dir> <name>[, alternative names]`` (ImageNet's
  ``LOC_synset_mapping.txt``: "n01440764 tench, Tinca tinca" -> "tench");
- JSON: ``{"<class_dir>": "<name>"}``, or a list of names for numbered dirs "0", "1", ...
  (ImageNetV2).

``build_class_mcq`` turns a folder into 4-option questions (true class + distractors from
``recipes.data.distractors``) and writes them batch by batch, so ImageNet-scale folders never
sit in memory. Image files are stored as they are (JPEG stays JPEG).

    folder = ClassFolder.scan("/data/imagenet/val", names_file="LOC_synset_mapping.txt")
    build_class_mcq(folder, "imagenet-vqa-val.parquet", question=CLASS_QUESTION, clip_path="/models/clip")
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recipes.common.progress_bar import progress_bar
from recipes.data.distractors import DistractorSampler, balanced_answer_positions, clip_text_similarity, layout_options
from recipes.data.writers import RecordWriter, check_writable

logger = logging.getLogger("forgetless.data")

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
"""File extensions counted as images when scanning a folder (case-insensitive)."""

FOLDER_QUESTION = "What is this?"
"""The default question of the class-folder adapter."""

CLASSES_FILE = "classes.txt"
"""A names file beside the class folders, used when no other is given."""

WRITE_BATCH_ROWS = 512
"""Rows read and written per batch."""


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def read_class_names(path: str | os.PathLike, class_dirs: Sequence[str]) -> dict[str, str]:
    """Map class dir -> readable name from a names file (formats in the module docstring)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, list):
            return {str(index): str(name) for index, name in enumerate(data)}
        if isinstance(data, dict):
            return {str(key): str(value) for key, value in data.items()}
        raise ValueError(f"{path}: expected a JSON object or list of class names, got {type(data).__name__}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and len(lines) == len(class_dirs) and not any(line.split()[0] in class_dirs for line in lines):
        return dict(zip(class_dirs, lines, strict=True))  # one name per line, in class order
    names = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path}: line {line_number}: expected '<class_dir> <name>', got {line.strip()!r}")
        names[parts[0]] = parts[1].split(",")[0].strip()
    return names


@dataclass(frozen=True)
class ClassFolder:
    """The images of a class-labelled folder."""

    root: Path
    """The folder the file paths are relative to."""
    class_dirs: tuple[str, ...]
    """Class identifiers (directory names), in class-index order."""
    class_names: tuple[str, ...]
    """Readable class names, parallel to ``class_dirs``."""
    files: tuple[tuple[str, int], ...]
    """(path relative to ``root``, class index) of every image."""

    def __post_init__(self) -> None:
        if len(self.class_dirs) != len(self.class_names):
            raise ValueError("ClassFolder.class_names must be parallel to class_dirs")
        if len(self.class_dirs) < 2:
            raise ValueError(f"{self.root}: a class folder needs at least 2 classes, found {len(self.class_dirs)}")
        if not self.files:
            raise ValueError(f"{self.root}: no image files found (extensions {', '.join(IMAGE_EXTENSIONS)})")

    @staticmethod
    def _names(class_dirs: Sequence[str], names_file: str | os.PathLike | None) -> tuple[str, ...]:
        if names_file is None:
            return tuple(d.replace("_", " ") for d in class_dirs)
        mapping = read_class_names(names_file, class_dirs)
        missing = [d for d in class_dirs if d not in mapping]
        if missing:
            raise ValueError(f"{names_file}: no name for class dir(s) {', '.join(missing[:10])}")
        return tuple(mapping[d] for d in class_dirs)

    @classmethod
    def scan(cls, root: str | os.PathLike, names_file: str | os.PathLike | None = None) -> ClassFolder:
        """Read ``root/<class_dir>/<files>`` (subfolders of a class dir are included).

        Without ``names_file``, a ``classes.txt`` in ``root`` names the classes when there is one.
        A class dir without images is an error (it would still be offered as a distractor).
        """
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: not a directory of class folders")
        class_dirs = tuple(
            sorted((p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_natural_key)
        )
        files = []
        for index, class_dir in enumerate(class_dirs):
            for dirpath, _, filenames in sorted(os.walk(root / class_dir)):
                for filename in sorted(filenames, key=_natural_key):
                    if filename.lower().endswith(IMAGE_EXTENSIONS):
                        files.append((os.path.relpath(os.path.join(dirpath, filename), root), index))
        empty = [class_dir for index, class_dir in enumerate(class_dirs) if not any(i == index for _, i in files)]
        if files and empty:
            listed = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
            raise ValueError(f"{root}: class folder(s) without images ({', '.join(IMAGE_EXTENSIONS)}): {listed}")
        if names_file is None and (root / CLASSES_FILE).is_file():
            names_file = root / CLASSES_FILE
        return cls(root, class_dirs, cls._names(class_dirs, names_file), tuple(files))

    @classmethod
    def from_lists(
        cls,
        root: str | os.PathLike,
        classes_file: str | os.PathLike,
        files_file: str | os.PathLike,
        names_file: str | os.PathLike | None = None,
    ) -> ClassFolder:
        """A class list (one class id per line) and a files list ("<path relative to root> <class id>")."""
        root = Path(root)
        class_dirs = tuple(line.strip() for line in Path(classes_file).read_text().splitlines() if line.strip())
        index_of = {class_dir: index for index, class_dir in enumerate(class_dirs)}
        files = []
        for line_number, line in enumerate(Path(files_file).read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.strip().rsplit(maxsplit=1)
            if len(parts) != 2 or parts[1] not in index_of:
                raise ValueError(
                    f"{files_file}: line {line_number}: expected '<path> <class id from {classes_file}>', got {line.strip()!r}"
                )
            files.append((parts[0], index_of[parts[1]]))
        return cls(root, class_dirs, cls._names(class_dirs, names_file), tuple(files))


def distractor_sampler(
    class_names: Sequence[str], clip_path: str | None, pool_size: int, seed: int
) -> DistractorSampler:
    """CLIP-similar pools when ``clip_path`` is given, else uniformly random distractors."""
    if clip_path is None:
        return DistractorSampler.uniform(class_names)
    similarity = clip_text_similarity(class_names, clip_path)
    return DistractorSampler.from_similarity(class_names, similarity, pool_size=pool_size, seed=seed)


def class_mcq_records(
    folder: ClassFolder,
    sampler: DistractorSampler,
    *,
    question: str,
    source: str,
    seed: int,
    num_options: int = 4,
) -> Iterator[list[dict]]:
    """Batches of MCQ records, one per image of ``folder`` (deterministic given ``seed``)."""
    rng = np.random.default_rng([seed, 1])
    positions = balanced_answer_positions(len(folder.files), num_options, rng)
    batch = []
    for row, (relative, class_index) in enumerate(folder.files):
        distractors = sampler.sample_names(class_index, num_options - 1, rng)
        options, answer = layout_options(folder.class_names[class_index], distractors, int(positions[row]), rng)
        meta = {
            "classname": folder.class_names[class_index],
            "class_dir": folder.class_dirs[class_index],
            "file": relative,
        }
        batch.append(
            {
                "id": os.path.splitext(relative)[0].replace(os.sep, "/"),
                "image": (folder.root / relative).read_bytes(),
                "question": question,
                "options": options,
                "answer": answer,
                "source": source,
                "meta": meta,
            }
        )
        if len(batch) == WRITE_BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def build_class_mcq(
    folder: ClassFolder,
    out: str | os.PathLike,
    *,
    question: str = FOLDER_QUESTION,
    clip_path: str | None = None,
    seed: int = 0,
    source: str | None = None,
    num_options: int = 4,
    pool_size: int = 5,
    overwrite: bool = False,
) -> int:
    """Write the classification MCQs of ``folder`` to ``out``; returns the row count.

    Distractors: ``num_options - 1`` classes sampled from the ``pool_size`` classes most
    CLIP-similar to the true one when ``clip_path`` is given, else from all other classes.
    """
    if num_options < 2:
        raise ValueError(f"num_options must be >= 2, got {num_options}")
    if len(folder.class_dirs) < num_options:
        raise ValueError(
            f"{folder.root}: {len(folder.class_dirs)} classes cannot make {num_options}-option questions "
            f"(each option is a class); add classes"
        )
    if clip_path is not None and pool_size < num_options - 1:
        raise ValueError(f"pool_size ({pool_size}) must be >= num_options - 1 ({num_options - 1})")
    check_writable(out, overwrite)
    source = source or Path(str(out)).stem
    sampler = distractor_sampler(folder.class_names, clip_path, pool_size, seed)
    bar = progress_bar(total=len(folder.files), desc=f"writing {Path(str(out)).name}", unit="image")
    with bar, RecordWriter(out, overwrite=overwrite) as writer:
        for batch in class_mcq_records(
            folder, sampler, question=question, source=source, seed=seed, num_options=num_options
        ):
            writer.write(batch)
            bar.update(len(batch))
    logger.info(
        "%s: %d questions over %d classes (%s distractors)",
        out,
        writer.rows,
        len(folder.class_dirs),
        "CLIP-similar" if clip_path else "random",
    )
    return writer.rows
