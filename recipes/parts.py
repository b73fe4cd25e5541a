"""python -m recipes.parts MODEL [--parts P]

Named model parts: what a recipe's ``parts:`` value touches, resolved to parameter names.

Parts are defined once for every family by the family's real module paths
(``recipes.models.families``): ``vision`` (the encoder, projector excluded), ``projector``,
``llm`` (embeddings, decoder layers, final norm and ``lm_head``), ``llm.attn`` (q/k/v/o
projections only), ``llm.mlp_gate_up`` (MLP gate and up projections only), ``lm_head``, and
``vision.last<N>`` (the last N encoder blocks). ``+`` combines parts: ``llm+projector``.

    from recipes.parts import resolve_parts
    names = resolve_parts(model, family, "llm.attn+projector")   # ordered parameter names

The command prints one row per part (parameter count, share of the model, first and last
parameter name) so users can see what a recipe trains before they spend compute on it. The
paper's real models (``qwen2.5-vl-3b``, ``qwen2.5-vl-7b``, ``llava-1.5-7b``) and their shape
spellings (``qwen2.5-vl-7b@layers=2``, ``recipes.models.shapes``) are built on the meta device,
with no weights: from the checkpoint's config when it is in the Hugging Face cache, else from the
shipped configuration; the first line says which.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contract.exits import EXIT_BAD_INPUT
from recipes.common.input_errors import input_boundary
from recipes.common.text_table import text_table
from recipes.models.families import ModelFamily

if TYPE_CHECKING:  # annotations only: grid validation reads split_parts and must not load torch
    from torch import nn

PART_NAMES = ("vision", "projector", "llm", "llm.attn", "llm.mlp_gate_up", "lm_head", "vision.last<N>")
"""The part names users write, in the order the table lists them."""

_LAST_BLOCKS = re.compile(r"^vision\.last(\d+)$")


class UnknownPartError(ValueError):
    """A ``parts`` value names a part that does not exist."""


@dataclass(frozen=True)
class PartSummary:
    """One row of the parts table."""

    part: str
    parameters: int
    share: float
    first: str
    last: str


def _block_count(model: nn.Module, module_path: str) -> int:
    return len(model.get_submodule(module_path))


def _layer_module_pattern(layers: str, modules: Iterable[str]) -> re.Pattern:
    alternatives = "|".join(re.escape(name) for name in modules)
    return re.compile(rf"^{re.escape(layers)}\.\d+\.(?:{alternatives})\.")


def _part_predicate(model: nn.Module, family: ModelFamily, part: str) -> Callable[[str], bool]:
    """A test on parameter names for one (non-combined) part name."""
    if part == "vision":
        return lambda name: name.startswith(family.vision) and not name.startswith(family.projector)
    if part == "projector":
        return lambda name: name.startswith(family.projector)
    if part == "llm":
        return lambda name: name.startswith((family.language_model, family.lm_head))
    if part == "lm_head":
        return lambda name: name.startswith(family.lm_head)
    if part == "llm.attn":
        return _layer_module_pattern(family.llm_layers, family.attn_projections).match
    if part == "llm.mlp_gate_up":
        return _layer_module_pattern(family.llm_layers, family.mlp_gate_up).match
    last = _LAST_BLOCKS.match(part)
    if last:
        count, depth = int(last.group(1)), _block_count(model, family.vision_blocks)
        if not 1 <= count <= depth:
            raise UnknownPartError(
                f"part {part!r}: this model's vision encoder has {depth} blocks, use vision.last1..{depth}"
            )
        blocks = "|".join(str(index) for index in range(depth - count, depth))
        return re.compile(rf"^{re.escape(family.vision_blocks)}\.(?:{blocks})\.").match
    raise AssertionError(f"unhandled part {part!r}")  # split_parts lets only known names through


def split_parts(parts: str) -> list[str]:
    """``"llm+projector"`` -> ``["llm", "projector"]``, checking every name without loading a model.

    Raises UnknownPartError naming the valid parts; the depth behind ``vision.last<N>`` is
    checked when a model is at hand (``resolve_parts``).
    """
    pieces = [piece.strip() for piece in parts.split("+")]
    if not parts.strip() or any(not piece for piece in pieces):
        raise UnknownPartError(f"parts {parts!r} is empty or has an empty piece around '+'")
    for piece in pieces:
        if piece not in PART_NAMES[:-1] and not _LAST_BLOCKS.match(piece):
            valid = ", ".join(PART_NAMES)
            raise UnknownPartError(
                f"unknown part {piece!r}; valid parts: {valid} (combine with '+', e.g. llm+projector)"
            )
    return pieces


def _tied_output_name(model: nn.Module) -> str | None:
    """Name of the input-embedding parameter when ``lm_head`` shares it (tied embeddings)."""
    output, inputs = model.get_output_embeddings(), model.get_input_embeddings()
    if output is None or inputs is None or output.weight is not inputs.weight:
        return None
    return next(name for name, param in model.named_parameters() if param is inputs.weight)


def resolve_parts(model: nn.Module, family: ModelFamily, parts: str) -> list[str]:
    """Parameter names (in model order) selected by ``parts``; raises UnknownPartError."""
    pieces = split_parts(parts)
    predicates = [_part_predicate(model, family, part) for part in pieces]
    names = [name for name, _ in model.named_parameters() if any(test(name) for test in predicates)]
    if "lm_head" in pieces and not any(name.startswith(family.lm_head) for name in names):
        tied = _tied_output_name(model)
        if tied and tied not in names:
            names.append(tied)  # lm_head is tied to the embeddings: training it trains that tensor
    if not names:
        raise UnknownPartError(f"parts {parts!r} select no parameters of this model")
    return names


def summarize_parts(model: nn.Module, family: ModelFamily, parts: Iterable[str]) -> list[PartSummary]:
    """One summary row per part name (or combination) in ``parts``."""
    sizes = {name: param.numel() for name, param in model.named_parameters()}
    total = sum(sizes.values())
    rows = []
    for part in parts:
        names = resolve_parts(model, family, part)
        count = sum(sizes[name] for name in names)
        rows.append(PartSummary(part, count, count / total, names[0], names[-1]))
    return rows


def format_table(rows: list[PartSummary], total: int) -> str:
    """Fixed-width text table of part summaries."""
    header = ("part", "parameters", "% of model", "first parameter", "last parameter")
    body = [(r.part, f"{r.parameters:,}", f"{100 * r.share:.2f}", r.first, r.last) for r in rows]
    body.append(("(model)", f"{total:,}", "100.00", "", ""))
    return text_table(header, body)


DEFAULT_TABLE_PARTS = (*PART_NAMES[:-1], "vision.last1")
"""The rows the command prints when no --parts is given."""


def _meta_model(name: str) -> tuple[nn.Module, ModelFamily, str] | None:
    """(model on the meta device, family, where its config came from) for the real models; None for others."""
    import torch  # local: grid validation reads this module and must not load torch
    import transformers
    from transformers import AutoConfig

    from recipes.models.catalog import HUB_MODELS, ModelNotFoundError, resolve_model_dir
    from recipes.models.families import family_for_model_type
    from recipes.models.shapes import SHAPE_CONFIG_DIR, build_shape_model, full_spec, parse_shape_name

    spec = parse_shape_name(name)
    if spec is None and name not in HUB_MODELS:
        return None
    if spec is None:
        try:
            directory = resolve_model_dir(name)
        except ModelNotFoundError:
            spec = full_spec(name)
        else:
            config = AutoConfig.from_pretrained(directory, local_files_only=True)
            family = family_for_model_type(config.model_type)
            with torch.device("meta"):
                model = getattr(transformers, family.model_class)(config)
            return model, family, f"config of the cached checkpoint {directory}, meta device"
    model = build_shape_model(spec, device="meta")
    family = family_for_model_type(model.config.model_type)
    shipped = (SHAPE_CONFIG_DIR / spec.base).relative_to(SHAPE_CONFIG_DIR.parents[2])
    return model, family, f"shipped config {shipped}, meta device: no weights"


@input_boundary
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.parts",
        description="Show which parameters each named part of a model selects.",
    )
    parser.add_argument(
        "model",
        help="registry name (toy-qwen2.5-vl, qwen2.5-vl-3b, ...), shape model (qwen2.5-vl-7b@layers=2), "
        "local dir or cached Hub id",
    )
    parser.add_argument("--parts", action="append", help="part or '+' combination to show (repeatable); default: all")
    args = parser.parse_args(argv)

    from recipes.models.registry import load_model  # local: loads torch and transformers; only the command needs it

    try:
        meta = _meta_model(args.model)
        if meta is None:
            loaded = load_model(args.model)
            meta = (loaded.model, loaded.family, f"weights in {loaded.path}")
        model, family, source = meta
        parts = args.parts or DEFAULT_TABLE_PARTS
        rows = summarize_parts(model, family, parts)
    except (UnknownPartError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    total = sum(param.numel() for param in model.parameters())
    print(f"{args.model} ({family.name}, {total:,} parameters; {source})")
    print(format_table(rows, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
