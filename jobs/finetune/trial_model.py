"""The base model of a trial as its compute settings ask for it: dtype, attention kernel, image size.

    loaded = load_trial_model(trial)      # jobs.finetune.loop.TrialWorker.setup, WiSE-FT blends

``precision`` bf16 loads the weights in bf16 (DeepSpeed keeps fp32 master weights of the trained
ones), so a 7B model takes half the host memory while it loads; fp32 loads fp32.
``attn_implementation`` goes to ``from_pretrained``; ``min_pixels``/``max_pixels`` bound the image
size of the processor that the training collator and the evaluators share.
"""

from __future__ import annotations

import torch

from jobs.finetune.config import TrialConfig
from recipes.models import LoadedModel, load_model
from recipes.models.processors import set_pixel_bounds


def load_trial_model(trial: TrialConfig) -> LoadedModel:
    """``trial.model`` in the trial's precision and attention kernel, its processor with the trial's pixel bounds."""
    loaded = load_model(
        trial.model,
        dtype=torch.bfloat16 if trial.bf16 else torch.float32,
        attn_implementation=trial.attn_implementation,
    )
    set_pixel_bounds(loaded.processor, trial.min_pixels, trial.max_pixels)
    return loaded
