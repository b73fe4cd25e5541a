"""Whether a grid's trials can ever run on a cluster, and how many trials a grid may have.

A trial whose worker asks for more GPUs (or CPUs) than any node has, or can be given by the
autoscaler, would wait forever; a grid of a million cells would take minutes to expand. Both
are stopped before any trial starts:

    from orchestrator.capacity import capacity_problems, node_shapes, trial_count_problem
    problems = capacity_problems(grid.resources, node_shapes())   # ["resources.gpus_per_worker: ..."]
    problem = trial_count_problem(sections, max_trials=1000)        # "grid: up to 1,000,000 trials; ..."

``node_shapes`` lists the resources of every node the cluster has and of every node type its
autoscaler may add (Ray's cluster config in the GCS; Ray Train puts a worker on one node).
Without a running Ray it is this machine: the local Ray a sweep starts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.expand import axis_choices

DEFAULT_MAX_TRIALS = 1000
"""Most trials a grid may expand to unless ``--max-trials`` raises it."""


@dataclass(frozen=True)
class NodeShape:
    """The resources of one node (or node type) and how many of it the cluster may have (None: no limit)."""

    resources: Mapping[str, float]
    """``{"CPU": n, "GPU": m, ...}`` of one node."""
    count: int | None = 1
    """Nodes of this shape the cluster has or may grow to (None: the autoscaler sets no maximum)."""
    label: str = "node"
    """What it is, for messages: ``node``, ``node type gpu-worker``, ``this machine``."""


def local_shapes() -> list[NodeShape]:
    """This machine as one node (what a local Ray gets), without starting Ray."""
    import torch  # local: only the check without a running Ray needs it; orchestrator.grid imports this module

    resources = {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
    return [NodeShape(resources, 1, "this machine")]


def autoscaler_shapes() -> list[NodeShape]:
    """The node types the connected cluster's autoscaler may add (none when it has no autoscaler)."""
    try:
        from ray._private.state import state  # local: a private Ray module, absent in some versions

        config = state.get_cluster_config()
    except Exception:  # an older Ray, or a cluster without an autoscaler config
        return []
    if config is None:
        return []
    shapes = []
    for group in config.node_group_configs:
        if group.max_count == 0:
            continue
        count = None if group.max_count < 0 else int(group.max_count)
        shapes.append(NodeShape(dict(group.resources), count, f"node type {group.name}"))
    return shapes


def node_shapes() -> list[NodeShape]:
    """The connected cluster's live nodes and autoscaler node types; this machine when Ray is not running."""
    import ray  # local: orchestrator.grid imports this module, and loading a grid does not import Ray

    if not ray.is_initialized():
        return local_shapes()
    live = [NodeShape(dict(node["Resources"])) for node in ray.nodes() if node.get("Alive")]
    return live + autoscaler_shapes()


def _most(shapes: Sequence[NodeShape], kind: str) -> float:
    return max((shape.resources.get(kind, 0.0) for shape in shapes if shape.count != 0), default=0.0)


def _total(shapes: Sequence[NodeShape], kind: str) -> float:
    amounts = [shape.resources.get(kind, 0.0) for shape in shapes]
    if any(shape.count is None and amount > 0 for shape, amount in zip(shapes, amounts)):
        return math.inf
    return sum(amount * (shape.count or 0) for shape, amount in zip(shapes, amounts))


def capacity_problems(resources, shapes: Sequence[NodeShape]) -> list[str]:
    """Why a trial with ``resources`` (the grid's section) can never be placed on ``shapes``."""
    per_worker = {
        "CPU": ("cpus_per_worker", resources.cpus_per_worker),
        "GPU": ("gpus_per_worker", resources.gpus_per_worker),
    }
    problems = []
    workers = resources.workers_per_trial
    for kind, (key, amount) in per_worker.items():
        if amount <= 0:
            continue
        most, total = _most(shapes, kind), _total(shapes, kind)
        if amount > most:
            problems.append(
                f"resources.{key}: {amount:g} {kind}s per worker, but no node of this cluster has or can be "
                f"given more than {most:g} (a Ray Train worker runs on one node)"
            )
        elif workers * amount > total:
            problems.append(
                f"resources.workers_per_trial: {workers} workers x {amount:g} {kind}s = {workers * amount:g}, "
                f"more than this cluster can ever have ({total:g})"
            )
    return problems


def trial_count_bound(axes, methods, include, continual) -> int:
    """The most trials a grid's sections can expand to (cells before excludes and duplicates)."""

    def cells(given: dict[str, list], lora_lrs: list | None) -> int:
        choices = axis_choices(axes, given)
        per_method = sum(
            len(lora_lrs) if method == "lora" and lora_lrs else len(choices["lr"]) for method in choices["method"]
        )
        rest = math.prod(len(choices[key]) for key in ("parts", "data_fraction", "mix_ratio", "seed"))
        return per_method * rest

    if continual is not None and continual.tuning_methods:
        axes = axes.model_copy(update={"method": continual.tuning_methods})
    lora_lrs = methods.lora.lr if methods is not None else None
    total = cells({}, lora_lrs)
    for cell in include or []:
        given = cell.given()
        total += cells(given, None if "lr" in given else lora_lrs)
    replays = len(continual.replay_per_task) if continual is not None else 1
    return total * replays


def trial_count_problem(axes, methods, include, continual, max_trials: int) -> str | None:
    """``grid: ...`` when the grid may expand to more than ``max_trials`` trials, else None."""
    if axes is None:
        return None
    bound = trial_count_bound(axes, methods, include, continual)
    if bound <= max_trials:
        return None
    return (
        f"grid: expands to up to {bound:,} trials, more than the limit of {max_trials:,}; "
        f"shrink the axes or raise the limit with --max-trials {bound}"
    )
