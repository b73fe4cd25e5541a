"""The channel between a sweep's adaptive search and its trials: the search decides, the trial stops itself.

An ASHA search (``orchestrator.search``) decides in the sweep driver, after each evaluation a
trial reports, whether the trial goes on. Rather than have Ray Tune stop the trial's process from
outside, the scheduler posts the decision here and rank 0 of the trial waits for it after the
evaluation (``jobs.finetune.loop``); a stopped trial then ends like an early stop: every rank stops
after the same step, ``TorchTrainer.fit()`` returns, and Ray Train shuts its worker group down and
removes the workers' placement group itself. A trial stopped from outside left that placement group
to Ray Train's cleaner, which asks Ray's state API (the dashboard) whether the trial's controller
is alive; on a cluster without a dashboard, or with one too loaded to answer, the workers' CPUs
stayed reserved and a search on a full machine waited forever.

The board is a named Ray actor of the sweep's job, one per sweep; trials outside an adaptive
search (a grid, an Optuna search, ``python -m jobs.finetune``) find none and never wait:

    board = open_board(sweep)                              # the sweep driver, for an asha search
    post_decision(sweep, trial_id, step, stop=True)        # the scheduler, after each evaluation
    board = find_board(sweep)                              # rank 0 of a trial worker
    stop = wait_for_decision(board, trial_id, step)        # True / False, or None past the deadline
    close_board(board)
"""

from __future__ import annotations

import asyncio
import logging

import ray

log = logging.getLogger("forgetless.search_decisions")

DECISION_DEADLINE_S = 300.0
"""How long a trial waits for the search's decision on an evaluation before it trains on (a
scheduler that never answers must not hang a trial). A later evaluation still sees a stop."""
BOARD_RESOURCES = {"node:__internal_head__": 0.001}
"""The board holds no CPU and lives on the head node, with the sweep driver (not on a spot worker)."""


def board_name(sweep: str) -> str:
    """The named actor of a sweep's decisions (named actors are scoped to the sweep's Ray job)."""
    return f"forgetless-search-decisions-{sweep}"


@ray.remote(num_cpus=0)
class DecisionBoard:
    """Per trial, the steps the search has decided on and the first step it stopped the trial at."""

    def __init__(self) -> None:
        self.decided: dict[str, set[int]] = {}
        self.stopped_at: dict[str, int] = {}
        self.changed = asyncio.Condition()

    async def decide(self, trial_id: str, step: int, stop: bool) -> None:
        async with self.changed:
            self.decided.setdefault(trial_id, set()).add(step)
            if stop:
                self.stopped_at[trial_id] = min(step, self.stopped_at.get(trial_id, step))
            self.changed.notify_all()

    def _decision(self, trial_id: str, step: int) -> bool | None:
        if self.stopped_at.get(trial_id, step + 1) <= step:
            return True
        return False if step in self.decided.get(trial_id, ()) else None

    async def wait(self, trial_id: str, step: int, timeout_s: float) -> bool | None:
        """Whether the search stopped the trial at ``step`` or before; None when it has not decided in time."""
        async with self.changed:
            try:
                await asyncio.wait_for(
                    self.changed.wait_for(lambda: self._decision(trial_id, step) is not None), timeout_s
                )
            except asyncio.TimeoutError:
                return None
            return self._decision(trial_id, step)


def open_board(sweep: str):
    """The sweep's decision board, created for this search (a leftover one of the same name is replaced)."""
    old = find_board(sweep)
    if old is not None:
        ray.kill(old)
    return DecisionBoard.options(name=board_name(sweep), resources=BOARD_RESOURCES).remote()


def find_board(sweep: str | None):
    """The sweep's decision board, or None when the trial is not in an adaptive search."""
    if not sweep or not ray.is_initialized():
        return None
    try:
        return ray.get_actor(board_name(sweep))
    except ValueError:
        return None


def close_board(board) -> None:
    """End the board with its search."""
    ray.kill(board)


def post_decision(sweep: str, trial_id: str, step: int, stop: bool) -> bool:
    """Tell a trial the search's decision on its evaluation at ``step``; False when the sweep has no board."""
    board = find_board(sweep)
    if board is None:
        return False
    board.decide.remote(trial_id, step, stop)
    return True


def wait_for_decision(board, trial_id: str, step: int, timeout_s: float = DECISION_DEADLINE_S) -> bool | None:
    """Whether the search stopped the trial at ``step`` (or before); None past the deadline, with a warning."""
    stop = ray.get(board.wait.remote(trial_id, step, timeout_s))
    if stop is None:
        log.warning("no search decision on trial %s step %d within %.0f s; training on", trial_id, step, timeout_s)
    return stop
