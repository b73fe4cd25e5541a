"""Read a trial's checkpoint back into a model, outside of training.

A trial checkpoint (one ``checkpoint_*`` directory of a trial's Ray Train run, or a copy of one)
holds rank 0's ``trainer_state.json`` (the trial's settings and step) and DeepSpeed's state of
the trainable tensors under tag ``state`` (frozen weights are never saved: they are the base
model's). This module rebuilds the trial's model, base model + parts/method, and loads the
trained tensors, consolidating ZeRO shards with DeepSpeed's own ``zero_to_fp32`` utility:

    loaded, trial, step = load_trial_checkpoint("sweeps/demo-forgetting/llm-full-.../checkpoint_...")

Checkpoints live on shared storage that others may write to, so they are read as data, never as
code: every ``torch.load`` here, DeepSpeed's own included (its resume and its ``zero_to_fp32``
ask for ``weights_only=False``), runs inside ``weights_only_loading()``, which loads tensors and
plain containers only, plus the few DeepSpeed record classes its files hold
(``DEEPSPEED_RECORD_CLASSES``).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import importlib
import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

from recipes.methods import MethodConfig, apply_method
from recipes.models import load_model

CHECKPOINT_TAG = "state"
"""DeepSpeed tag (sub-directory) of the engine state inside a trial checkpoint."""
TRAINER_STATE = "trainer_state.json"
"""Rank 0's record of the trial settings and the step a checkpoint was taken after."""


DEEPSPEED_RECORD_CLASSES = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)
"""Plain record classes (numbers and names, no behaviour on load) that DeepSpeed pickles into checkpoints."""


def _record_classes() -> list[type]:
    classes = []
    for path in DEEPSPEED_RECORD_CLASSES:
        module, _, name = path.rpartition(".")
        classes.append(getattr(importlib.import_module(module), name))
    return classes


def _record_enum_member(cls: type, name: str) -> enum.Enum:
    """What ``getattr(cls, name)`` in a checkpoint may mean: a member of a DeepSpeed record enum.

    Some Python versions (Debian's 3.11.2 among them) pickle enum members by name, as
    ``getattr(ZeroStageEnum, "weights")``; this stands in for ``builtins.getattr`` while loading and
    answers only for the enums in ``DEEPSPEED_RECORD_CLASSES``, so a checkpoint cannot reach any
    other attribute of anything.
    """
    if isinstance(cls, type) and issubclass(cls, enum.Enum) and cls in _record_classes() and name in cls.__members__:
        return cls[name]
    raise pickle.UnpicklingError(f"checkpoint asks for attribute {name!r} of {cls!r}, which is not a record enum")


@contextlib.contextmanager
def weights_only_loading() -> Iterator[None]:
    """Inside, every ``torch.load`` (also one asking for ``weights_only=False``) loads data only."""
    original = torch.load

    @functools.wraps(original)
    def load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = load
    try:
        with torch.serialization.safe_globals([*_record_classes(), (_record_enum_member, "builtins.getattr")]):
            yield
    finally:
        torch.load = original


def read_trainer_state(directory: str | Path) -> dict:
    """The ``trainer_state.json`` of a trial checkpoint; a clear error when it is not one."""
    path = Path(directory) / TRAINER_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a trial checkpoint (no {TRAINER_STATE})")
    return json.loads(path.read_text())


def trained_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """The trained tensors of a checkpoint (fp32), whatever ZeRO stage wrote it."""
    state_dir = Path(directory) / CHECKPOINT_TAG
    with weights_only_loading():
        if any(state_dir.glob("*optim_states.pt")) and any(state_dir.glob("zero_pp_rank_*")):
            return get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=CHECKPOINT_TAG)
        states = torch.load(state_dir / "mp_rank_00_model_states.pt", map_location="cpu")
    return {name: tensor.float() for name, tensor in states["module"].items()}


def load_trial_checkpoint(directory: str | Path):
    """(LoadedModel with the trained weights, trial settings dict, step) of a trial checkpoint."""
    state = read_trainer_state(directory)
    trial = state["trial"]
    loaded = load_model(trial["model"])
    method = MethodConfig(trial["method"], trial["lora_r"], trial["lora_alpha"], trial["lora_dropout"])
    model, _ = apply_method(loaded.model, loaded.family, trial["parts"], method)
    trained = trained_state_dict(directory)
    missing = set(trained) - {name for name, _ in model.named_parameters()}
    if missing:
        raise ValueError(f"{directory}: checkpoint tensors not in the rebuilt model: {sorted(missing)[:5]}")
    model.load_state_dict(trained, strict=False)
    loaded.model = model.eval()
    return loaded, trial, state["step"]
