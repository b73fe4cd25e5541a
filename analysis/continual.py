"""Continual-learning sweeps: the paper's Table 3 (Last and Average per task) and accuracy matrices.

A continual trial logs ``cl/acc/<task>`` at step 0 (zero-shot) and after each task, with the
``continual_method``, ``continual_tasks`` and ``replay_per_task`` params (``jobs.continual``).
This module reads them back from MLflow and lays them out like Table 3: rows are methods
(grouped with / without replay, a zero-shot row first), columns are tasks with *Last* (accuracy
after the final task) and *Average* (mean accuracy on the tasks seen so far, right after
learning that task), plus the means; the best value of each column within a group is bold.

    runs = load_continual_runs(sweep)                # [] for a single-task sweep
    table = build_table3(runs)
    Path("table3.md").write_text(table3_markdown(table))
    section = table3_html(table)                     # the report page's Table 3 section (heading and table)
    figure = matrix_figure(runs)                     # one heatmap per trial
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from markupsafe import Markup
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from analysis.errors import AnalysisError
from analysis.markup import macro
from analysis.mlflow_reader import Sweep, Trial
from contract import layout
from contract.layout import continual_recipe_label, task_accuracy_metric

METHOD_LABELS = {"inclora": "IncLoRA", "seqfull": "SeqFull"}
"""Display names of the continual-learning methods."""
TABLE3_TITLE = "Table 3: continual learning, Last and Average per task"


@dataclass(frozen=True)
class ContinualRun:
    """One continual trial: its accuracy matrix and what produced it."""

    name: str
    """Trial name."""
    method: str
    """``inclora`` or ``seqfull``."""
    label: str
    """Row label: ``IncLoRA · llm · lr 5e-04`` (plus the seed when a sweep repeats seeds)."""
    replay: int
    """Replayed samples per earlier task (0 = none)."""
    tasks: tuple[str, ...]
    """Task names in training order."""
    zero_shot: tuple[float, ...]
    """Accuracy on each task before training (percent)."""
    matrix: tuple[tuple[float, ...], ...]
    """``matrix[k][j]``: accuracy on task j after training on tasks 0..k (percent)."""

    def last(self, task: int) -> float:
        return self.matrix[-1][task]

    def average_at(self, task: int) -> float:
        """Mean accuracy on tasks 0..task right after learning ``task``."""
        return sum(self.matrix[task][: task + 1]) / (task + 1)

    @property
    def last_mean(self) -> float:
        return sum(self.matrix[-1]) / len(self.tasks)

    @property
    def average(self) -> float:
        return sum(self.average_at(k) for k in range(len(self.tasks))) / len(self.tasks)


def _continual_run(client: MlflowClient, trial: Trial, show_seed: bool) -> ContinualRun:
    params = trial.params
    try:
        tasks = tuple(json.loads(params[layout.PARAM_CONTINUAL_TASKS]))
        method, replay = params[layout.PARAM_CONTINUAL_METHOD], int(params.get(layout.PARAM_REPLAY_PER_TASK, "0"))
    except (KeyError, ValueError) as error:
        raise AnalysisError(f"continual trial {trial.name} ({trial.run_id}): bad params ({error})") from error
    histories = {}
    for task in tasks:
        points = sorted(
            client.get_metric_history(trial.run_id, task_accuracy_metric(task)), key=lambda m: (m.step, m.timestamp)
        )
        histories[task] = {m.step: m.value for m in points}
    steps = sorted(set.intersection(*(set(h) for h in histories.values())))
    if not steps or steps[0] != 0 or len(steps) != len(tasks) + 1:
        raise AnalysisError(
            f"continual trial {trial.name} ({trial.run_id}): expected cl/acc/<task> at step 0 and after each of "
            f"{len(tasks)} tasks, found steps {steps}"
        )
    rows = [tuple(histories[task][step] for task in tasks) for step in steps]
    recipe = trial.setting.recipe
    seed = f" · seed {trial.seed}" if show_seed else ""
    label = continual_recipe_label(METHOD_LABELS.get(method, method), recipe.parts, recipe.lr) + seed
    return ContinualRun(trial.name, method, label, replay, tasks, rows[0], tuple(rows[1:]))


def load_continual_runs(sweep: Sweep) -> list[ContinualRun]:
    """The sweep's continual trials (none for a single-task sweep), ordered as Table 3 lists them."""
    trials = [trial for trial in sweep.trials if layout.PARAM_CONTINUAL_METHOD in trial.params]
    if not trials:
        return []
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    show_seed = len({trial.seed for trial in trials}) > 1
    runs = [_continual_run(client, trial, show_seed) for trial in trials]
    sequences = {run.tasks for run in runs}
    if len(sequences) > 1:
        raise AnalysisError(
            f"sweep {sweep.experiment}: continual trials use different task sequences {sorted(sequences)}"
        )
    return sorted(runs, key=lambda run: (run.replay == 0, run.replay, run.method, run.label))


@dataclass(frozen=True)
class Table3:
    """Rows of Table 3: (group title or None, label, values); values are None where undefined."""

    columns: tuple[str, ...]
    """Column headers after the label."""
    rows: tuple[tuple[str | None, str, tuple[float | None, ...]], ...]
    """(group the row opens or None, label, one value per column)."""
    best: frozenset[tuple[int, int]]
    """(row, column) cells holding the best value of their column within their group."""

    def lines(self) -> list[tuple[str | None, str, tuple[tuple[str, bool], ...]]]:
        """Per row: the group it opens (or None), its label, and per column (text, best in its group)."""
        return [
            (
                opens,
                label,
                tuple(
                    ("-", False) if value is None else (f"{value:.2f}", (row, column) in self.best)
                    for column, value in enumerate(values)
                ),
            )
            for row, (opens, label, values) in enumerate(self.rows)
        ]


def build_table3(runs: list[ContinualRun]) -> Table3:
    """Table 3 of the continual runs: a zero-shot row, then methods with and without replay."""
    if not runs:
        raise AnalysisError("no continual trials to tabulate")
    tasks = runs[0].tasks
    columns = tuple(f"{task} {kind}" for task in tasks for kind in ("Last", "Average")) + ("Last (mean)", "Average")
    zero = runs[0].zero_shot
    rows: list[tuple[str | None, str, tuple[float | None, ...]]] = [
        (None, "Zero-shot", tuple(v for value in zero for v in (value, None)) + (sum(zero) / len(zero), None))
    ]
    groups: list[list[int]] = []
    current = None
    for run in runs:
        group = f"w/ replay ({run.replay} per task)" if run.replay else "w/o replay"
        opens = group if group != current else None
        if opens:
            groups.append([])
            current = group
        values = tuple(v for k in range(len(tasks)) for v in (run.last(k), run.average_at(k)))
        rows.append((opens, run.label, values + (run.last_mean, run.average)))
        groups[-1].append(len(rows) - 1)
    best = set()
    for members in groups:
        for column in range(len(columns)):
            values = [(rows[r][2][column], r) for r in members if rows[r][2][column] is not None]
            if len(values) > 1:
                top = max(value for value, _ in values)
                best |= {(r, column) for value, r in values if value == top}
    return Table3(columns, tuple(rows), frozenset(best))


def table3_markdown(table: Table3, title: str = TABLE3_TITLE) -> str:
    """Table 3 as Markdown (best of a column within its group in bold)."""
    lines = [
        f"## {title}",
        "",
        "| Method | " + " | ".join(table.columns) + " |",
        "|---|" + "---:|" * len(table.columns),
    ]
    for opens, label, cells in table.lines():
        if opens:
            lines.append(f"| *{opens}* |" + " |" * len(table.columns))
        lines.append(f"| {label} | " + " | ".join(f"**{text}**" if best else text for text, best in cells) + " |")
    lines += [
        "",
        "Last: accuracy (%) on the task after the final task. Average: mean accuracy on the tasks "
        "seen so far, right after learning the task. Bold: best of the column within its group.",
    ]
    return "\n".join(lines) + "\n"


def table3_html(table: Table3, title: str = TABLE3_TITLE) -> Markup:
    """The report page's Table 3 section: a heading and the table (class ``table3``, CSS: table3.html.j2)."""
    return macro("table3.html.j2", "section")(title, table.columns, table.lines())


def matrix_figure(runs: list[ContinualRun]) -> Figure | None:
    """One heatmap per continual trial: rows = zero-shot and after each task, columns = tasks."""
    if not runs:
        return None
    tasks = runs[0].tasks
    columns = min(len(runs), 2)
    lines = -(-len(runs) // columns)
    cell = 0.6
    figure = Figure(
        figsize=(1.6 + columns * (0.6 + cell * len(tasks)) + 1.0, lines * (1.4 + cell * (len(tasks) + 1))),
        layout="constrained",
    )
    for index, run in enumerate(runs):
        axes = figure.add_subplot(lines, columns, index + 1)
        axes.grid(False)
        values = [run.zero_shot, *run.matrix]
        image = axes.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for row, line in enumerate(values):
            for column, value in enumerate(line):
                axes.text(
                    column,
                    row,
                    f"{value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if value < 60 else "black",
                )
        axes.set_xticks(range(len(tasks)), [task.removeprefix("toy-cl-") for task in tasks], rotation=30, ha="right")
        rows = ["zero-shot", *(f"after {t.removeprefix('toy-cl-')}" for t in tasks)]
        axes.set_yticks(range(len(tasks) + 1), rows if index % columns == 0 else [])
        replay = f"replay {run.replay}" if run.replay else "no replay"
        axes.set_title(f"{METHOD_LABELS.get(run.method, run.method)}, {replay}", fontsize=10)
    figure.colorbar(image, ax=figure.axes, shrink=0.8, label="accuracy (%)")
    return figure
