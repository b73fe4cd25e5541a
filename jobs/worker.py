"""The function every Ray Train worker of a trial runs: ``trial_worker(config)``.

    TorchTrainer(trial_worker, train_loop_config={"trial": trial.to_dict()}, ...)   # jobs.trial

``config["trial"]`` is a ``TrialConfig.to_dict()``; a continual trial (``continual_tasks`` set) runs
``jobs.continual.loop.ContinualWorker``, any other trial ``jobs.finetune.loop.TrialWorker``.

Ray pickles this function by reference, so the Tune trial process and the Ray Train controller
import this module just to unpickle it. The training stack (transformers, DeepSpeed, the model,
data and evaluation code) is therefore imported inside the function, on the workers only: the
two processes that never train skip about 8 s of imports each per trial on a 2-core machine.
"""

from __future__ import annotations

import logging
import os

from jobs.finetune.config import TrialConfig
from recipes.common.redaction import install_log_redaction


def trial_worker(config: dict) -> None:
    """Ray Train entry point of every trial: set up logging, then run the trial's worker to the end."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    install_log_redaction()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trial = TrialConfig.from_dict(config["trial"])
    if trial.continual:
        from jobs.continual.loop import ContinualWorker as Worker  # local: see the module docstring
    else:
        from jobs.finetune.loop import TrialWorker as Worker  # local: see the module docstring
    Worker(trial).run()
