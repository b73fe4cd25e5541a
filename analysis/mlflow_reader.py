"""Load one sweep (a parent run and its trial runs) from MLflow into plain dataclasses.

    sweep = load_sweep("demo-forgetting", "sqlite:///mlflow.db")
    for trial in sweep.trials:
        trial.setting.recipe.label, trial.final("id_id"), trial.delta("ood_id")

Reads MLflow only, through `MlflowClient` (search_runs, get_metric_history), following the
layout of `contract.layout`: parent run tagged `forgetless.kind=sweep`, child runs tagged
`forgetless.kind=trial` and `mlflow.parentRunId`, accuracies as `acc/q/<quadrant>` in percent
with step 0 = the zero-shot model. Problems a user can fix raise `AnalysisError`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from analysis.errors import AnalysisError
from contract import layout
from contract.layout import (
    DONE_STATUSES,
    EARLY_STOP_TAG,
    KIND_TAG,
    LAYOUT_TAG,
    LAYOUT_VERSION,
    OOD_QUADRANTS,
    PARENT_TAG,
    QUADRANTS,
    STATUS_TAG,
    SWEEP_KIND,
    TARGET_QUADRANT,
    TRIAL_KIND,
    accuracy_metric,
    recipe_label,
    stderr_metric,
)
from recipes.common.redaction import redact

HISTORY_READERS = 8
"""Metric-history requests ``load_sweep`` keeps in flight at once (a report of a 1,000-trial sweep
reads 8,000 histories; docs/tracking.md has the times)."""

_MLFLOW_STATUS_TO_TRIAL_STATUS = {
    "FINISHED": "finished",
    "FAILED": "failed",
    "KILLED": "failed",
    "RUNNING": "running",
    "SCHEDULED": "running",
}


_QUADRANT_TEXT_IMAGE = {
    "id_id": ("ID", "ID"),
    "id_ood": ("ID", "OOD"),
    "ood_id": ("OOD", "ID"),
    "ood_ood": ("OOD", "OOD"),
}
_QUADRANT_NAME_FORMATS = {"plain": "{text}^T-{image}^I", "tex": "{text}$^T$-{image}$^I$"}


def quadrant_name(quadrant: str, style: str = "plain") -> str:
    """The paper's name of a quadrant: `OOD^T-ID^I` (plain) or mathtext (tex); HTML: `analysis.markup.rich_text`."""
    text, image = _QUADRANT_TEXT_IMAGE[quadrant]
    return _QUADRANT_NAME_FORMATS[style].format(text=text, image=image)


@dataclass(frozen=True, order=True)
class Recipe:
    """What is tuned and how: trials of one recipe share a colour; seeds are its repeats."""

    parts: str
    """Trainable parts as logged, e.g. `llm`, `llm+projector`, `llm.attn`."""
    method: str
    """`full` or `lora`."""
    lr_value: float = field(repr=False)
    """The learning rate as a number (sorting only)."""
    lr: str
    """The learning rate as logged, e.g. `1e-05`."""

    @property
    def label(self) -> str:
        """Readable name, the same as the trial param `recipe`: `llm · full · lr 1e-05`."""
        return recipe_label(self.parts, self.method, self.lr)


@dataclass(frozen=True)
class Setting:
    """A recipe plus the data conditions (fraction, mixing); seeds of one setting are averaged."""

    recipe: Recipe
    """The recipe (parts, method, lr)."""
    data_fraction: float
    """Share of the target training data used (1.0 = all)."""
    mix_ratio: float
    """Share of training samples drawn from mixed-in sources (0.0 = none)."""
    mix_sources: tuple[str, ...]
    """Names of the mixed-in datasets (empty when none)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.data_fraction <= 1.0:
            raise AnalysisError(f"data_fraction must be in (0, 1], got {self.data_fraction}")
        if not 0.0 <= self.mix_ratio < 1.0:
            raise AnalysisError(f"mix_ratio must be in [0, 1), got {self.mix_ratio}")

    @property
    def sort_key(self) -> tuple:
        """Recipe, then the most data first, then the mixing condition."""
        return self.recipe, -self.data_fraction, self.mix_ratio, self.mix_sources

    def label(self, *, show_fraction: bool, show_mix: bool) -> str:
        """Recipe label plus the data conditions the sweep varies."""
        pieces = [self.recipe.label]
        if show_fraction:
            pieces.append(f"{format_percent(self.data_fraction)} data")
        if show_mix:
            pieces.append(self.mix_label)
        return " · ".join(pieces)

    @property
    def mix_label(self) -> str:
        """`no mix` or `mix 50% llava`."""
        if self.mix_ratio == 0.0:
            return "no mix"
        sources = "+".join(self.mix_sources)
        return f"mix {format_percent(self.mix_ratio)} {sources}".rstrip()


def format_percent(share: float) -> str:
    """0.025 -> `2.5%`, 1.0 -> `100%` (no trailing zeros)."""
    return f"{share * 100:.4g}%"


@dataclass(frozen=True)
class Trial:
    """One finished (or early-stopped) trial run with its accuracy histories."""

    run_id: str
    """MLflow run id."""
    name: str
    """Trial name (MLflow run name), e.g. `llm-full-lr1e-05-f1.0-s0`."""
    status: str
    """`finished` or `early_stopped` (the `forgetless.status` tag)."""
    setting: Setting
    """Recipe and data conditions, parsed from the params."""
    seed: str
    """The `seed` param."""
    params: Mapping[str, str]
    """All params of the run, as MLflow stores them (strings)."""
    tags: Mapping[str, str]
    """All tags of the run (sweep, trial_id, forgetless.*, mlflow.*)."""
    history: Mapping[str, Mapping[int, float]]
    """Quadrant -> {step: accuracy in percent}; step 0 is the zero-shot model."""
    stderr: Mapping[str, Mapping[int, float]] = field(default_factory=dict)
    """Quadrant -> {step: standard error of the accuracy in pp} (``stderr/q/<quadrant>``; runs
    logged before it existed have none)."""

    def __post_init__(self) -> None:
        absent = [accuracy_metric(q) for q in QUADRANTS if 0 not in self.history.get(q, {})]
        if absent:
            raise AnalysisError(
                f"trial run {self.name} ({self.run_id}) has no step-0 (zero-shot) value for {', '.join(absent)}"
            )

    @property
    def status_text(self) -> str:
        """The status, with the early-stop reason when there is one."""
        reason = self.tags.get(EARLY_STOP_TAG, "")
        return f"{self.status} ({reason})" if reason else self.status

    def steps(self, quadrant: str) -> list[int]:
        """Sorted steps at which the quadrant was evaluated."""
        return sorted(self.history[quadrant])

    def zero_shot(self, quadrant: str) -> float:
        """Accuracy at step 0 (percent)."""
        return self.history[quadrant][0]

    def final(self, quadrant: str) -> float:
        """Accuracy at the last evaluated step (percent)."""
        return self.history[quadrant][max(self.history[quadrant])]

    def delta(self, quadrant: str) -> float:
        """Final minus zero-shot accuracy, in percentage points."""
        return self.final(quadrant) - self.zero_shot(quadrant)

    def final_stderr(self, quadrant: str) -> float | None:
        """Standard error (pp) of the accuracy at the last evaluated step; None when not logged."""
        return self.stderr.get(quadrant, {}).get(max(self.history[quadrant]))

    def delta_stderr(self, quadrant: str) -> float | None:
        """Standard error of ``delta`` (pp): the final and zero-shot errors combined as independent;
        None when the run did not log both."""
        errors = self.stderr.get(quadrant, {})
        final_step = max(self.history[quadrant])
        if 0 not in errors or final_step not in errors:
            return None
        return math.hypot(errors[0], errors[final_step])

    def trajectory(self, quadrant: str) -> list[tuple[int, float, float]]:
        """(step, ID accuracy, quadrant accuracy) at the steps where both were evaluated."""
        id_history = self.history[TARGET_QUADRANT]
        return [(s, id_history[s], self.history[quadrant][s]) for s in self.steps(quadrant) if s in id_history]

    def mean_ood_trajectory(self) -> list[tuple[int, float, float]]:
        """(step, ID accuracy, mean of the three OOD quadrants) where all four were evaluated."""
        id_history = self.history[TARGET_QUADRANT]
        steps = set(id_history).intersection(*(self.history[q] for q in OOD_QUADRANTS))
        return [
            (s, id_history[s], sum(self.history[q][s] for q in OOD_QUADRANTS) / len(OOD_QUADRANTS))
            for s in sorted(steps)
        ]


@dataclass(frozen=True)
class SkippedRun:
    """A child run of the sweep left out of the analysis (failed or still running)."""

    run_id: str
    """MLflow run id."""
    name: str
    """Trial name."""
    status: str
    """Its `forgetless.status` (or MLflow status when the tag is absent)."""


@dataclass(frozen=True)
class Sweep:
    """One sweep: its parent run and the trials that can be analysed."""

    experiment: str
    """MLflow experiment name (the grid's `name`)."""
    tracking_uri: str
    """Where it was read from."""
    parent_run_id: str
    """The sweep's parent run id (artifacts of the report go there)."""
    parent_run_name: str
    """The sweep name."""
    trials: tuple[Trial, ...]
    """Finished and early-stopped trials, sorted by setting (Setting.sort_key), then seed."""
    skipped: tuple[SkippedRun, ...]
    """Child runs not analysed, with their status."""

    def __post_init__(self) -> None:
        if not self.trials:
            raise AnalysisError(f"sweep {self.parent_run_name} has no finished trials")

    @property
    def varies_fraction(self) -> bool:
        """Whether the trials use more than one data_fraction."""
        return len({t.setting.data_fraction for t in self.trials}) > 1

    @property
    def varies_mix(self) -> bool:
        """Whether the trials use more than one mixing condition (ratio or sources)."""
        return len({(t.setting.mix_ratio, t.setting.mix_sources) for t in self.trials}) > 1

    @property
    def varies_mix_ratio(self) -> bool:
        """Whether the trials use more than one mix_ratio."""
        return len({t.setting.mix_ratio for t in self.trials}) > 1

    def setting_label(self, setting: Setting) -> str:
        """Setting label showing only the data conditions this sweep varies."""
        return setting.label(show_fraction=self.varies_fraction, show_mix=self.varies_mix)

    @property
    def recipes(self) -> list[Recipe]:
        """Distinct recipes, sorted."""
        return sorted({t.setting.recipe for t in self.trials})


def load_sweep(experiment: str, tracking_uri: str, parent_run_id: str | None = None) -> Sweep:
    """Read a sweep: the latest parent run of the experiment, or the one with `parent_run_id`."""
    _require_database(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment, tracking_uri)
    parent = _parent_run(client, experiment_id, experiment, parent_run_id)
    children = [
        run
        for run in all_runs(client, experiment_id, f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
        if run.data.tags.get(KIND_TAG, TRIAL_KIND) == TRIAL_KIND
    ]
    finished = [run for run in children if _trial_status(run) in DONE_STATUSES]
    skipped = tuple(
        SkippedRun(run.info.run_id, run.info.run_name, _trial_status(run))
        for run in children
        if _trial_status(run) not in DONE_STATUSES
    )
    sweep_name = parent.info.run_name
    if not finished:
        counts = Counter(s.status for s in skipped)
        found = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no trial runs"
        raise AnalysisError(
            f"experiment '{experiment}', sweep {sweep_name} (run {parent.info.run_id}) has no "
            f"finished trials ({found}); a report needs at least one trial with "
            f"{STATUS_TAG} in {{{', '.join(DONE_STATUSES)}}}"
        )
    run_ids = [run.info.run_id for run in finished]
    with ThreadPoolExecutor(HISTORY_READERS) as readers:  # one request per (run, metric): side by side
        histories = dict(zip(run_ids, readers.map(lambda run: _histories(client, run), finished)))
        stderrs = dict(zip(run_ids, readers.map(lambda run: _histories(client, run, stderr_metric), finished)))
    _require_metrics(finished, histories, experiment)
    trials = sorted(
        (_trial(run, histories[run.info.run_id], stderrs[run.info.run_id]) for run in finished),
        key=lambda t: (t.setting.sort_key, t.seed, t.name),
    )
    return Sweep(
        experiment=experiment,
        tracking_uri=tracking_uri,
        parent_run_id=parent.info.run_id,
        parent_run_name=sweep_name,
        trials=tuple(trials),
        skipped=tuple(sorted(skipped, key=lambda s: s.name)),
    )


def _require_database(tracking_uri: str) -> None:
    """A sqlite URI must name an existing file (MLflow would silently create an empty one)."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and ":memory:" not in tracking_uri:
        path = Path(tracking_uri[len(prefix) :])
        if not path.is_file():
            raise AnalysisError(
                f"no MLflow database at {path} (tracking URI {tracking_uri}); pass "
                f"--tracking-uri or set MLFLOW_TRACKING_URI to the store the sweep logged to"
            )


def _experiment_id(client: MlflowClient, experiment: str, tracking_uri: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    names = sorted(e.name for e in client.search_experiments())
    listing = ", ".join(names) if names else "(none)"
    raise AnalysisError(f"unknown experiment '{experiment}' in {tracking_uri}; experiments there: {listing}")


def _parent_run(client: MlflowClient, experiment_id: str, experiment: str, parent_run_id: str | None) -> Run:
    parents = client.search_runs(
        [experiment_id], f"tags.`{KIND_TAG}` = '{SWEEP_KIND}'", order_by=["attributes.start_time DESC"]
    )
    if not parents:
        raise AnalysisError(f"experiment '{experiment}' has no sweep parent run (a run tagged {KIND_TAG}={SWEEP_KIND})")
    if parent_run_id is None:
        return _readable(parents[0])
    for run in parents:
        if run.info.run_id == parent_run_id:
            return _readable(run)
    listing = ", ".join(f"{run.info.run_id} ({run.info.run_name})" for run in parents)
    raise AnalysisError(
        f"experiment '{experiment}' has no sweep parent run {parent_run_id}; its sweep runs, latest first: {listing}"
    )


def _readable(parent: Run) -> Run:
    """The parent run, if this analysis reads its layout version (runs without the tag are version 1)."""
    version = parent.data.tags.get(LAYOUT_TAG, "1")
    if version != str(LAYOUT_VERSION):
        raise AnalysisError(
            f"sweep {parent.info.run_name} ({parent.info.run_id}) was logged with layout version "
            f"{version}; this analysis reads version {LAYOUT_VERSION}"
        )
    return parent


def all_runs(client: MlflowClient, experiment_id: str, filter_string: str) -> Iterator[Run]:
    """Every run matching the filter, following MLflow's pages (a page holds at most 1,000 runs)."""
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _trial_status(run: Run) -> str:
    tagged = run.data.tags.get(STATUS_TAG)
    return tagged if tagged else _MLFLOW_STATUS_TO_TRIAL_STATUS.get(run.info.status, run.info.status.lower())


def stderr_of_mean(errors: Iterable[float | None]) -> float | None:
    """Standard error of the mean of independent values whose standard errors are ``errors``
    (``sqrt(sum of squares) / count``); None when any is unknown."""
    known = list(errors)
    if not known or any(error is None for error in known):
        return None
    return math.sqrt(sum(error**2 for error in known)) / len(known)  # type: ignore[operator]


def _histories(
    client: MlflowClient, run: Run, metric: Callable[[str], str] = accuracy_metric
) -> dict[str, dict[int, float]]:
    """Quadrant -> {step: value} of ``metric(quadrant)`` for the quadrants the run has it for."""
    return {q: _metric_history(client, run.info.run_id, metric(q)) for q in QUADRANTS if metric(q) in run.data.metrics}


def _require_metrics(
    runs: list[Run], histories: Mapping[str, Mapping[str, Mapping[int, float]]], experiment: str
) -> None:
    """Every run needs each quadrant's accuracy, including its step-0 (zero-shot) value."""
    problems = []
    for run in runs:
        history = histories[run.info.run_id]
        missing = [
            accuracy_metric(q) if q not in history else f"{accuracy_metric(q)} at step 0"
            for q in QUADRANTS
            if 0 not in history.get(q, {})
        ]
        if missing:
            problems.append(f"{run.info.run_name} ({run.info.run_id}): {', '.join(missing)}")
    if problems:
        raise AnalysisError(
            f"experiment '{experiment}': {len(problems)} finished trial run(s) lack metrics the "
            f"report needs (per checkpoint, step 0 = zero-shot): " + "; ".join(problems)
        )


def _trial(run: Run, history: dict[str, dict[int, float]], stderr: dict[str, dict[int, float]]) -> Trial:
    params = {key: redact(value) for key, value in run.data.params.items()}  # a param may quote a URI with a key
    return Trial(
        run_id=run.info.run_id,
        name=run.info.run_name,
        status=_trial_status(run),
        setting=_setting(params, run),
        seed=params.get(layout.PARAM_SEED, "0"),
        params=params,
        tags=dict(run.data.tags),
        history=history,
        stderr=stderr,
    )


def _metric_history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """{step: value}; a step logged twice (a resumed trial) keeps its latest value."""
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return {m.step: m.value for m in points}


def _setting(params: Mapping[str, str], run: Run) -> Setting:
    missing = [p for p in (layout.PARAM_PARTS, layout.PARAM_METHOD, layout.PARAM_LR) if p not in params]
    if missing:
        raise AnalysisError(f"trial run {run.info.run_name} ({run.info.run_id}) lacks params {', '.join(missing)}")
    try:
        recipe = Recipe(
            lr_value=float(params[layout.PARAM_LR]),
            parts=params[layout.PARAM_PARTS],
            method=params[layout.PARAM_METHOD],
            lr=params[layout.PARAM_LR],
        )
        return Setting(
            recipe=recipe,
            data_fraction=float(params.get(layout.PARAM_DATA_FRACTION, "1.0")),
            mix_ratio=float(params.get(layout.PARAM_MIX_RATIO, "0.0")),
            mix_sources=_mix_sources(params.get(layout.PARAM_MIX, "[]")),
        )
    except (ValueError, AnalysisError) as error:
        raise AnalysisError(f"trial run {run.info.run_name} ({run.info.run_id}): {error}") from error


def _mix_sources(mix_param: str) -> tuple[str, ...]:
    """Dataset names from the `mix` param: a JSON list of names or of {dataset, ratio} objects."""
    entries = json.loads(mix_param) if mix_param.strip() else []
    if not isinstance(entries, list):
        raise ValueError(f"param mix must be a JSON list, got {mix_param!r}")
    names = [
        entry.get("dataset", entry.get("name", "?")) if isinstance(entry, dict) else str(entry) for entry in entries
    ]
    return tuple(sorted(names))
