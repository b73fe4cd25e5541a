"""The no-forgetting frontier of a sweep: trials and WiSE-FT blends in the (ID gain, worst OOD drop) plane.

    points = frontier_points(sweep)                 # every trial's last evaluation and its blends
    front = on_frontier(points)                     # the ones no other point beats on both
    compute = search_compute(sweep)                 # trial-steps spent vs the full grid's
    files, section = frontier_report(sweep, out_dir, figures)   # what analysis.report adds

ID gain = change of acc/q/id_id vs zero-shot (pp); worst OOD drop = how far the lowest of the
three OOD quadrants fell below zero-shot (pp; negative when every OOD quadrant rose). A point
is a trial's last evaluation (an early-stopped trial's too) or one of its WiSE-FT blends, read
from the ``wiseft/<alpha>/delta/q/<quadrant>`` metrics (``jobs.finetune.interpolate``). The
zero-shot model is the point (0, 0). The hypervolume is the area the points dominate above
the reference (no ID gain, the largest worst OOD drop of the points), in pp².

Compute is counted in trial-steps: the training steps of every analysed trial (its last
evaluated step), against the steps the full grid would take (the parent run's
``forgetless.full_grid_trial_steps`` tag, written by the sweep).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from analysis import pareto
from analysis.markup import render
from analysis.mlflow_reader import OOD_QUADRANTS, Sweep, Trial, quadrant_name
from analysis.plots import ZERO_SHOT_STYLE, FigureFile, paper_style, save_figure
from contract.layout import FULL_GRID_STEPS_TAG, INTERPOLATION_METRIC, QUADRANT_DELTA_PREFIX, SEARCH_TAG


@dataclass(frozen=True)
class FrontierPoint:
    """One evaluated model of the sweep in the (ID gain, worst OOD drop) plane."""

    trial: str
    """Trial name."""
    recipe: str
    """The trial's setting, as the report labels it."""
    alpha: float | None
    """WiSE-FT weight of the fine-tuned model (None: the trained weights themselves)."""
    id_gain: float
    """Change of the ID accuracy vs zero-shot (pp)."""
    worst_ood_drop: float
    """How far the lowest OOD quadrant fell below zero-shot (pp)."""
    worst_quadrant: str
    """That quadrant."""
    steps: int
    """Training steps of the trial."""

    @property
    def label(self) -> str:
        """``llm · full · lr 3e-04`` or ``llm · full · lr 3e-04 · WiSE-FT 0.5``."""
        return self.recipe if self.alpha is None else f"{self.recipe} · WiSE-FT {self.alpha:g}"

    @property
    def xy(self) -> pareto.Point:
        """Both coordinates as maxima: (ID gain, minus the worst OOD drop)."""
        return self.id_gain, -self.worst_ood_drop


def point_of(trial: Trial, recipe: str, deltas: dict[str, float], alpha: float | None = None) -> FrontierPoint:
    """A point from per-quadrant deltas (``id_id`` and the three OOD quadrants)."""
    worst = min(OOD_QUADRANTS, key=lambda q: deltas[q])
    return FrontierPoint(trial.name, recipe, alpha, deltas["id_id"], -deltas[worst], worst, max(trial.history["id_id"]))


def blend_deltas(metrics: dict[str, float]) -> dict[float, dict[str, float]]:
    """WiSE-FT weight -> {quadrant: delta} from a run's metrics (blends missing a quadrant are left out)."""
    blends: dict[float, dict[str, float]] = {}
    for key, value in metrics.items():
        match = INTERPOLATION_METRIC.match(key)
        if match and match["metric"].startswith(QUADRANT_DELTA_PREFIX):
            quadrant = match["metric"].removeprefix(QUADRANT_DELTA_PREFIX)
            blends.setdefault(float(match["alpha"]), {})[quadrant] = value
    return {alpha: deltas for alpha, deltas in sorted(blends.items()) if {"id_id", *OOD_QUADRANTS} <= set(deltas)}


def frontier_points(sweep: Sweep) -> list[FrontierPoint]:
    """Every analysed trial's last evaluation, then its WiSE-FT blends, in the sweep's trial order."""
    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    points = []
    for trial in sweep.trials:
        recipe = sweep.setting_label(trial.setting)
        points.append(point_of(trial, recipe, {q: trial.delta(q) for q in ("id_id", *OOD_QUADRANTS)}))
        blends = blend_deltas(client.get_run(trial.run_id).data.metrics)
        points += [point_of(trial, recipe, deltas, alpha) for alpha, deltas in blends.items()]
    return points


def on_frontier(points: list[FrontierPoint]) -> list[FrontierPoint]:
    """The points no other point beats on both ID gain and worst OOD drop, by increasing drop."""
    front = [points[i] for i in pareto.front_indices([p.xy for p in points])]
    return sorted(front, key=lambda p: (p.worst_ood_drop, p.id_gain))


def frontier_hypervolume(points: list[FrontierPoint], reference_drop: float) -> float:
    """Area (pp²) the points dominate above zero ID gain and below ``reference_drop``."""
    return pareto.hypervolume([p.xy for p in points], (0.0, -reference_drop))


@dataclass(frozen=True)
class SearchCompute:
    """Training compute of a sweep against the full grid's."""

    method: str
    """The search method (grid, asha, optuna)."""
    spent: int
    """Trial-steps of the analysed trials."""
    full_grid: int | None
    """Trial-steps of every cell of the grid trained to the end (None: not recorded)."""

    @property
    def share(self) -> float | None:
        """``spent`` / ``full_grid``."""
        return self.spent / self.full_grid if self.full_grid else None


def search_compute(sweep: Sweep) -> SearchCompute:
    """Trial-steps spent by the sweep's analysed trials and the full grid's, from its parent run."""
    tags = MlflowClient(tracking_uri=sweep.tracking_uri).get_run(sweep.parent_run_id).data.tags
    full = tags.get(FULL_GRID_STEPS_TAG)
    spent = sum(max(trial.history["id_id"]) for trial in sweep.trials)
    return SearchCompute(tags.get(SEARCH_TAG, "grid"), spent, int(full) if full else None)


# -- figure and tables ----------------------------------------------------------------------------


def frontier_figure(points: list[FrontierPoint]) -> Figure:
    """All points (trials: circles; blends: diamonds tied to their trial), the frontier joined, zero-shot."""
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axes = figure.add_subplot()
    trained = {p.trial: p for p in points if p.alpha is None}
    for blend in (p for p in points if p.alpha is not None):
        own = trained[blend.trial]
        axes.plot(
            [own.worst_ood_drop, blend.worst_ood_drop],
            [own.id_gain, blend.id_gain],
            color="0.75",
            linewidth=0.7,
            zorder=1,
        )
    for kind, marker, size in (("trials", "o", 36), ("WiSE-FT blends", "D", 18)):
        chosen = [p for p in points if (p.alpha is None) == (kind == "trials")]
        if chosen:
            axes.scatter(
                [p.worst_ood_drop for p in chosen],
                [p.id_gain for p in chosen],
                s=size,
                marker=marker,
                color="tab:blue" if kind == "trials" else "tab:orange",
                label=kind,
                zorder=3,
            )
    front = on_frontier(points)
    axes.plot(
        [p.worst_ood_drop for p in front],
        [p.id_gain for p in front],
        drawstyle="steps-post",
        color="tab:red",
        linewidth=1.4,
        label="frontier",
        zorder=2,
    )
    axes.plot([0.0], [0.0], label="zero-shot", **ZERO_SHOT_STYLE)
    axes.set_xlabel("worst OOD drop vs zero-shot (pp, lower is better)")
    axes.set_ylabel("ID gain vs zero-shot (pp)")
    axes.legend(loc="lower right")
    return figure


FRONTIER_COLUMNS = ("recipe", "trial", "point", "ID gain (pp)", "worst OOD drop (pp)", "worst quadrant", "steps")


def frontier_rows(points: list[FrontierPoint]) -> list[tuple[str, ...]]:
    """The frontier as table rows (FRONTIER_COLUMNS), by increasing worst OOD drop."""
    return [
        (
            p.recipe,
            p.trial,
            "trained" if p.alpha is None else f"WiSE-FT {p.alpha:g}",
            f"{p.id_gain:+.1f}",
            f"{p.worst_ood_drop:+.1f}",
            quadrant_name(p.worst_quadrant),
            str(p.steps),
        )
        for p in on_frontier(points)
    ]


def compute_text(compute: SearchCompute) -> str:
    """``asha search: 1,050 trial-steps, 64% of the full grid's 1,650``."""
    text = f"{compute.method} search: {compute.spent:,} trial-steps"
    if compute.share is not None:
        text += f", {compute.share:.0%} of the full grid's {compute.full_grid:,}"
    return text


def frontier_markdown(points: list[FrontierPoint], compute: SearchCompute) -> str:
    """The frontier table and the compute line as Markdown."""
    lines = [
        "**No-forgetting frontier: recipes no other point beats on both ID gain and worst OOD drop**",
        "",
        "| " + " | ".join(FRONTIER_COLUMNS) + " |",
        "|" + "---|" * len(FRONTIER_COLUMNS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in frontier_rows(points)]
    return "\n".join([*lines, "", compute_text(compute) + "."]) + "\n"


def frontier_html(points: list[FrontierPoint], compute: SearchCompute) -> Markup:
    """The report page's frontier section: compute, hypervolume and the frontier table."""
    reference = max([p.worst_ood_drop for p in points] + [0.0])
    return render(
        "frontier.html.j2",
        compute=compute_text(compute),
        volume=frontier_hypervolume(points, reference),
        reference=reference,
        columns=FRONTIER_COLUMNS,
        rows=frontier_rows(points),
    )


def frontier_report(sweep: Sweep, out_dir: Path, figures: list[FigureFile]) -> tuple[tuple[Path, ...], Markup]:
    """frontier.md and the frontier figure (appended to ``figures``); returns the files and the page section."""
    points = frontier_points(sweep)
    compute = search_compute(sweep)
    table = out_dir / "frontier.md"
    table.write_text(frontier_markdown(points, compute), encoding="utf-8")
    with paper_style():
        png, svg = save_figure(frontier_figure(points), out_dir / "figures", "frontier")
    figures.append(
        FigureFile(
            stem="frontier",
            title="No-forgetting frontier",
            png=png,
            svg=svg,
            caption="Every trial's last evaluation (circles) and its WiSE-FT blends (diamonds, tied to their trial) "
            "by worst OOD drop and ID gain vs zero-shot; the red line joins the frontier; the star is zero-shot.",
        )
    )
    return (table,), frontier_html(points, compute)
