"""Read a trial's checkpoint back into a model, outside of training.

A trial checkpoint (one ``checkpoint_*`` directory of a trial's Ray Train run, or a copy of one)
holds rank 0's ``trainer_state.json`` (the trial's settings and step) and DeepSpeed's state of
the trainable tensors under tag ``state`` (frozen weights are never saved: they are the base
model's). This module rebuilds the trial's model, base model + parts/method, and loads the
trained tensors, consolidating ZeRO shards with DeepSpeed's own ``zero_to_fp32`` utility:

    loaded, trial, step = load_trial_checkpoint("sweeps/demo-forgetting/llm-full-.../checkpoint_...")

A checkpoint names its base (``trainer_state.json``'s ``base``: the model name and the SHA-256 of
its config and weight files, ``base_record``); every reader rebuilds the base and refuses a
checkpoint whose base has other weights (``BaseMismatchError``), so trained tensors are never
laid over a different base. ``trainable_state_only(module)`` is what keeps frozen weights out of
the saved state: DeepSpeed's ``exclude_frozen_parameters`` walks ``named_parameters()``, which
names a tied tensor once, so a frozen output head tied to the input embedding (Qwen2.5-VL-3B)
would otherwise be saved whole.

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
import hashlib
import importlib
import pickle
from collections.abc import Iterator
from pathlib import Path

import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

from recipes.common.cache import cache_root, content_key
from recipes.common.input_errors import InputError, reading
from recipes.common.json_loading import load_json
from recipes.methods import MethodConfig, apply_method
from recipes.models import load_model

CHECKPOINT_TAG = "state"
"""DeepSpeed tag (sub-directory) of the engine state inside a trial checkpoint."""
TRAINER_STATE = "trainer_state.json"
"""Rank 0's record of the trial settings and the step a checkpoint was taken after."""
BASE_KEY = "base"
"""Key of ``trainer_state.json`` that names the base model a checkpoint's tensors were trained on."""
WEIGHT_SUFFIXES = (".safetensors", ".bin")
"""Files of a model directory that hold weights (hashed, with ``config.json``, into the base's identity)."""
HASH_CHUNK = 16 << 20
"""Bytes read at a time while hashing a weight file."""


class BaseMismatchError(ValueError):
    """A checkpoint was trained on another base than the one its reader has."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, remembered per (path, size, mtime) under ``<cache>/file-sha256/``.

    The first hash of a multi-GB weight file reads it once (about 1 s per GB here); later ones,
    in any process of the machine, read a few bytes of cache instead.
    """
    stat = path.stat()
    memo = cache_root() / "file-sha256" / f"{content_key([str(path.resolve()), stat.st_size, stat.st_mtime_ns])}.txt"
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(digest.hexdigest())
    return digest.hexdigest()


def base_record(name: str, directory: Path) -> dict[str, str]:
    """What identifies a base model: its name and the SHA-256 of its config and weight files' contents."""
    files = sorted(p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES or p.name == "config.json")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return {"model": name, "sha256": digest.hexdigest()}


def check_base(directory: str | Path, state: dict, loaded) -> None:
    """Refuse (``BaseMismatchError``) a checkpoint whose recorded base is not ``loaded``'s weights."""
    recorded = state.get(BASE_KEY)
    if not recorded:
        raise BaseMismatchError(f"{directory}: checkpoint records no base model, so its tensors cannot be trusted")
    current = base_record(loaded.name, loaded.path)
    if recorded.get("sha256") != current["sha256"]:
        raise BaseMismatchError(
            f"{directory}: checkpoint was trained on base {recorded.get('model')!r} (sha256 "
            f"{str(recorded.get('sha256'))[:12]}), but {loaded.name!r} at {loaded.path} has other weights "
            f"(sha256 {current['sha256'][:12]}); refusing to mix them"
        )


def frozen_state_keys(module: torch.nn.Module, prefix: str = "") -> set[str]:
    """State-dict keys of ``module``'s frozen parameters, under every name (tied tensors have several)."""
    names = module.named_parameters(prefix=prefix.rstrip("."), remove_duplicate=False)
    return {name for name, param in names if not param.requires_grad}


@contextlib.contextmanager
def trainable_state_only(module: torch.nn.Module) -> Iterator[None]:
    """Inside, ``module.state_dict()`` leaves out every frozen parameter, tied names included."""

    def drop_frozen(owner, state_dict, prefix, local_metadata):
        for key in frozen_state_keys(owner, prefix) & set(state_dict):
            del state_dict[key]

    handle = module.register_state_dict_post_hook(drop_frozen)
    try:
        yield
    finally:
        handle.remove()


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


def save_trainable_state(engine, directory: str | Path) -> None:
    """DeepSpeed's save of ``engine`` (all ranks) under ``CHECKPOINT_TAG``: trainable tensors, optimizer, schedule."""
    with trainable_state_only(engine.module):
        engine.save_checkpoint(str(directory), tag=CHECKPOINT_TAG, exclude_frozen_parameters=True)


def load_trainable_state(engine, directory: str | Path) -> None:
    """Load what ``save_trainable_state`` wrote into ``engine``, whose module is already the base + method."""
    with weights_only_loading():
        engine.load_checkpoint(str(directory), tag=CHECKPOINT_TAG, load_module_strict=False)


def read_trainer_state(directory: str | Path) -> dict:
    """The ``trainer_state.json`` of a trial checkpoint; a clear error when it is not one."""
    path = Path(directory) / TRAINER_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a trial checkpoint (no {TRAINER_STATE})")
    state = load_json(path.read_bytes(), str(path))
    problem = trainer_state_problem(state)
    if problem:
        raise InputError(f"{path}: {problem}")
    return state


TRIAL_STATE_TYPES = {
    "model": str,
    "parts": str,
    "method": str,
    "lora_r": int,
    "lora_alpha": (int, float),
    "lora_dropout": (int, float),
}
"""Trial settings a checkpoint reader needs, with their JSON types."""


def trainer_state_problem(state: object) -> str | None:
    """What makes ``state`` (a parsed ``trainer_state.json``) unusable, or None."""
    if not isinstance(state, dict):
        return f"expected a JSON object, got {type(state).__name__}"
    trial, step = state.get("trial"), state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"step: expected an integer >= 0, got {str(step)[:40]!r}"
    if not isinstance(trial, dict):
        return f"trial: expected the trial's settings (a JSON object), got {type(trial).__name__}"
    for key, kind in TRIAL_STATE_TYPES.items():
        if not isinstance(trial.get(key), kind) or isinstance(trial.get(key), bool):
            return f"trial.{key}: missing or of the wrong type ({type(trial.get(key)).__name__})"
    return None


def trained_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """The trained tensors of a checkpoint (fp32), whatever ZeRO stage wrote it."""
    state_dir = Path(directory) / CHECKPOINT_TAG
    with weights_only_loading():
        if any(state_dir.glob("*optim_states.pt")) and any(state_dir.glob("zero_pp_rank_*")):
            with reading(str(state_dir), RuntimeError):  # torch reports a truncated file as RuntimeError
                return get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=CHECKPOINT_TAG)
        with reading(str(state_dir / "mp_rank_00_model_states.pt"), RuntimeError):
            states = torch.load(state_dir / "mp_rank_00_model_states.pt", map_location="cpu")
    module = states.get("module") if isinstance(states, dict) else None
    if not isinstance(module, dict) or not all(isinstance(value, torch.Tensor) for value in module.values()):
        raise InputError(f"{state_dir / 'mp_rank_00_model_states.pt'}: holds no 'module' mapping of tensors")
    return {name: tensor.float() for name, tensor in module.items()}


def load_trial_checkpoint(directory: str | Path):
    """(LoadedModel with the trained weights, trial settings dict, step) of a trial checkpoint."""
    state = read_trainer_state(directory)
    trial = state["trial"]
    loaded = load_model(trial["model"])
    check_base(directory, state, loaded)
    method = MethodConfig(trial["method"], trial["lora_r"], trial["lora_alpha"], trial["lora_dropout"])
    model, _ = apply_method(loaded.model, loaded.family, trial["parts"], method)
    trained = trained_state_dict(directory)
    missing = set(trained) - {name for name, _ in model.named_parameters()}
    if missing:
        raise ValueError(f"{directory}: checkpoint tensors not in the rebuilt model: {sorted(missing)[:5]}")
    model.load_state_dict(trained, strict=False)
    loaded.model = model.eval()
    return loaded, trial, state["step"]
