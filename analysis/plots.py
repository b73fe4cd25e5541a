"""The figures of a sweep report, drawn with matplotlib's Agg canvas (no display needed).

    figures = render_figures(sweep, summarize(sweep.trials), out_dir / "figures")
    figures[0].png, figures[0].svg

- trajectory: each trial's checkpoints as a path in (ID accuracy, OOD accuracy) space from the
  zero-shot point (paper Figure 2), one panel per OOD quadrant plus their mean;
- steps: accuracy vs training step per quadrant;
- fraction: final ID accuracy vs data_fraction on a log axis (paper Table 2c), only when the
  sweep varies data_fraction;
- mix_ratio: final ID and OOD^T-ID^I accuracy vs mix_ratio (paper Figure 4b), only when the
  sweep varies mix_ratio.
Colour = recipe (parts, method, lr; seeds share it); line style = data condition when the
sweep varies data_fraction or mixing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from analysis.errors import AnalysisError
from analysis.mlflow_reader import Recipe, Setting, Sweep, Trial, format_percent, quadrant_name, stderr_of_mean
from analysis.outcomes import Outcome
from contract.layout import OOD_QUADRANTS, QUADRANTS, TARGET_QUADRANT

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "legend.frameon": False,
    "figure.constrained_layout.h_pad": 0.08,
    "figure.constrained_layout.w_pad": 0.08,
}
"""rcParams of every report figure (applied only while drawing and saving)."""
LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))
ZERO_SHOT_STYLE = {
    "marker": "*",
    "markersize": 15,
    "color": "black",
    "markeredgecolor": "white",
    "markeredgewidth": 0.8,
    "linestyle": "none",
    "zorder": 6,
}
ZERO_SHOT_LEVEL = (0, (1, 2))
"""Line style of a zero-shot reference level (dotted)."""
LEGEND_ROW_INCHES = 0.24
"""Height of one legend row below the panels."""
MIN_ARROW_SEGMENT = 0.035
"""Segments shorter than this share of the panel diagonal get no arrowhead (it would hide them)."""
ID_AXIS = "ID accuracy (%)"


@dataclass(frozen=True)
class FigureFile:
    """One written figure."""

    stem: str
    """File name without suffix, e.g. `trajectory`."""
    title: str
    """Heading for the report."""
    caption: str
    """What the figure shows."""
    png: Path
    """The PNG file."""
    svg: Path
    """The SVG file."""


@contextmanager
def paper_style() -> Iterator[None]:
    """Apply STYLE for the duration (drawing and saving)."""
    with matplotlib.rc_context(STYLE):
        yield


def recipe_colours(recipes: Sequence[Recipe]) -> dict[Recipe, tuple]:
    """A distinct colour per recipe, in sorted recipe order (tab10, then tab20, then hues)."""
    ordered = sorted(set(recipes))
    palette_name = "tab10" if len(ordered) <= 10 else "tab20"
    palette = list(matplotlib.colormaps[palette_name].colors)
    extra = [
        matplotlib.colormaps["hsv"](i / max(1, len(ordered) - len(palette)))
        for i in range(max(0, len(ordered) - len(palette)))
    ]
    return dict(zip(ordered, palette + extra))


def condition_of(setting: Setting) -> tuple:
    """The data conditions of a setting (what varies besides the recipe)."""
    return setting.data_fraction, setting.mix_ratio, setting.mix_sources


def condition_label(sweep: Sweep, setting: Setting) -> str:
    """`25% data · mix 50% llava`: only the conditions the sweep varies."""
    pieces = ([f"{format_percent(setting.data_fraction)} data"] if sweep.varies_fraction else []) + (
        [setting.mix_label] if sweep.varies_mix else []
    )
    return " · ".join(pieces)


def condition_styles(sweep: Sweep) -> dict[tuple, object]:
    """A line style per data condition, largest fraction / no mix first (solid)."""
    conditions = sorted({condition_of(t.setting) for t in sweep.trials}, key=lambda c: (-c[0], c[1], c[2]))
    return {c: LINE_STYLES[i % len(LINE_STYLES)] for i, c in enumerate(conditions)}


def save_figure(figure: Figure, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write `stem.png` and `stem.svg` into out_dir (cropped to the drawing, legend included)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    png, svg = out_dir / f"{stem}.png", out_dir / f"{stem}.svg"
    figure.savefig(png, format="png", bbox_inches="tight", pad_inches=0.12, metadata={"Software": None})
    figure.savefig(svg, format="svg", bbox_inches="tight", pad_inches=0.12, metadata={"Date": None})
    return png, svg


def _figure(width: float, panels_height: float, legend_entries: int, columns: int) -> Figure:
    """A figure whose panels keep `panels_height` inches however many legend rows go below them."""
    rows = math.ceil(legend_entries / columns)
    return Figure(figsize=(width, panels_height + 0.5 + LEGEND_ROW_INCHES * rows), layout="constrained")


def _legend(figure: Figure, handles: list, columns: int) -> None:
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(columns, len(handles)),
        handlelength=2.6,
        columnspacing=1.6,
    )


def _colour_handles(recipes: Sequence[Recipe], colours: dict[Recipe, tuple]) -> list[Line2D]:
    """One legend entry per recipe: its colour."""
    return [
        Line2D([], [], color=colours[r], marker="o", markersize=5, linewidth=1.8, label=r.label)
        for r in sorted(set(recipes))
    ]


def _style_handles(labelled_styles: Sequence[tuple[object, str]]) -> list[Line2D]:
    """One legend entry per line style (grey), only when there is more than one."""
    if len(labelled_styles) < 2:
        return []
    return [
        Line2D([], [], color="0.35", linestyle=style, linewidth=1.6, label=label) for style, label in labelled_styles
    ]


def _recipe_handles(sweep: Sweep, colours: dict[Recipe, tuple]) -> list[Line2D]:
    """Colours of the recipes, then the line styles of the data conditions the sweep varies."""
    examples = {condition_of(t.setting): t.setting for t in sweep.trials}
    styles = [
        (style, condition_label(sweep, examples[condition])) for condition, style in condition_styles(sweep).items()
    ]
    return _colour_handles(sweep.recipes, colours) + _style_handles(styles)


def _draw_path(
    axes: Axes, xs: list[float], ys: list[float], colour: tuple, style: object, span: tuple[float, float]
) -> None:
    """A trial's checkpoints joined by a line, an arrowhead mid-segment, a bigger final point."""
    axes.plot(xs, ys, color=colour, linestyle=style, linewidth=1.6, marker="o", markersize=3.2, alpha=0.95, zorder=3)
    axes.plot(
        xs[-1:],
        ys[-1:],
        color=colour,
        marker="o",
        markersize=6.5,
        markeredgecolor="white",
        markeredgewidth=0.8,
        linestyle="none",
        zorder=4,
    )
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if math.hypot((x1 - x0) / span[0], (y1 - y0) / span[1]) < MIN_ARROW_SEGMENT:
            continue
        axes.annotate(
            "",
            xy=(x0 + 0.58 * (x1 - x0), y0 + 0.58 * (y1 - y0)),
            xytext=(x0 + 0.42 * (x1 - x0), y0 + 0.42 * (y1 - y0)),
            arrowprops={
                "arrowstyle": "-|>",
                "color": colour,
                "linewidth": 1.2,
                "mutation_scale": 13,
                "shrinkA": 0,
                "shrinkB": 0,
            },
            zorder=4,
        )


def _spans(paths: list[list[tuple[int, float, float]]]) -> tuple[float, float]:
    xs = [x for path in paths for _, x, _ in path]
    ys = [y for path in paths for _, _, y in path]
    return max(max(xs) - min(xs), 1e-9), max(max(ys) - min(ys), 1e-9)


FINAL_ERROR_STYLE = {"elinewidth": 0.9, "capsize": 2.5, "alpha": 0.75, "zorder": 2, "linestyle": "none"}
"""How a trial's last point shows its standard errors (ID across, the panel's quadrant up)."""

MEAN_OOD = "mean"
"""Panel key of the mean of the three OOD quadrants."""
TRAJECTORY_PANELS = (
    *((q, quadrant_name(q, "tex"), f"{quadrant_name(q, 'tex')} accuracy (%)") for q in OOD_QUADRANTS),
    (MEAN_OOD, "Mean of the three OOD quadrants", "Mean OOD accuracy (%)"),
)
"""(key, title, y label) per trajectory panel."""


def panel_points(trial: Trial, key: str) -> list[tuple[int, float, float]]:
    """(step, ID accuracy, panel accuracy) of a trial for a trajectory panel."""
    return trial.mean_ood_trajectory() if key == MEAN_OOD else trial.trajectory(key)


def final_point_error(trial: Trial, key: str) -> tuple[float, float] | None:
    """(ID, panel) standard errors of a trial's last point in a trajectory panel; None when not logged."""
    panel = OOD_QUADRANTS if key == MEAN_OOD else (key,)
    across, up = trial.final_stderr(TARGET_QUADRANT), stderr_of_mean(trial.final_stderr(q) for q in panel)
    return None if across is None or up is None else (across, up)


def trajectory_figure(sweep: Sweep) -> Figure:
    """Paper Figure 2: ID vs OOD accuracy paths from zero-shot, per OOD quadrant and their mean."""
    colours, styles = recipe_colours(sweep.recipes), condition_styles(sweep)
    handles = _recipe_handles(sweep, colours)
    handles.append(Line2D([], [], label="zero-shot (step 0)", **ZERO_SHOT_STYLE))
    if any(final_point_error(trial, MEAN_OOD) for trial in sweep.trials):
        handles.append(
            Line2D(
                [],
                [],
                color="grey",
                linewidth=FINAL_ERROR_STYLE["elinewidth"],
                label="± standard error (last checkpoint)",
            )
        )
    figure = _figure(15, 4.0, len(handles), columns=4)
    for axes, (key, title, ylabel) in zip(figure.subplots(1, len(TRAJECTORY_PANELS)), TRAJECTORY_PANELS):
        paths = [panel_points(trial, key) for trial in sweep.trials]
        span = _spans(paths)
        for trial, path in zip(sweep.trials, paths):
            _draw_path(
                axes,
                [x for _, x, _ in path],
                [y for _, _, y in path],
                colours[trial.setting.recipe],
                styles[condition_of(trial.setting)],
                span,
            )
            error = final_point_error(trial, key)
            if error is not None:
                axes.errorbar(
                    path[-1][1],
                    path[-1][2],
                    xerr=error[0],
                    yerr=error[1],
                    **FINAL_ERROR_STYLE,
                    color=colours[trial.setting.recipe],
                )
        starts = sorted({(round(path[0][1], 6), round(path[0][2], 6)) for path in paths if path[0][0] == 0})
        axes.plot([x for x, _ in starts], [y for _, y in starts], **ZERO_SHOT_STYLE)
        axes.set(title=title, xlabel=ID_AXIS, ylabel=ylabel)
        axes.margins(0.08)
    _legend(figure, handles, columns=4)
    figure.suptitle(
        f"Fine-tuning trajectories: ID vs OOD accuracy per checkpoint ({sweep.parent_run_name})",
        fontsize=12,
        fontweight="bold",
    )
    return figure


def steps_figure(sweep: Sweep) -> Figure:
    """Accuracy vs training step, one panel per quadrant."""
    colours, styles = recipe_colours(sweep.recipes), condition_styles(sweep)
    handles = _recipe_handles(sweep, colours)
    figure = _figure(11, 7.4, len(handles), columns=4)
    for axes, quadrant in zip(figure.subplots(2, 2).flat, QUADRANTS):
        for trial in sweep.trials:
            steps = trial.steps(quadrant)
            axes.plot(
                steps,
                [trial.history[quadrant][s] for s in steps],
                color=colours[trial.setting.recipe],
                linestyle=styles[condition_of(trial.setting)],
                linewidth=1.6,
                marker="o",
                markersize=3.2,
            )
        target = " (target task)" if quadrant == TARGET_QUADRANT else ""
        axes.set(
            title=f"{quadrant_name(quadrant, 'tex')}{target}",
            xlabel="Training step",
            ylabel=f"{quadrant_name(quadrant, 'tex')} accuracy (%)",
        )
        axes.margins(x=0.02, y=0.08)
    _legend(figure, handles, columns=4)
    figure.suptitle(
        f"Accuracy per quadrant during fine-tuning ({sweep.parent_run_name}; step 0 = zero-shot)",
        fontsize=12,
        fontweight="bold",
    )
    return figure


def _group_lines(
    outcomes: list[Outcome], line_key: Callable[[Setting], tuple], x_of: Callable[[Setting], float]
) -> dict[tuple, list[Outcome]]:
    lines: dict[tuple, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        lines[line_key(outcome.setting)].append(outcome)
    return {key: sorted(points, key=lambda o: x_of(o.setting)) for key, points in sorted(lines.items())}


def _spread(outcome: Outcome, value_of: Callable[[Trial], float]) -> float:
    values = [value_of(trial) for trial in outcome.trials]
    return stdev(values) if len(values) > 1 else 0.0


def fraction_figure(sweep: Sweep, outcomes: list[Outcome]) -> Figure | None:
    """Paper Table 2c as curves: final ID accuracy vs data fraction (log axis); None if not varied."""
    if not sweep.varies_fraction:
        return None
    colours = recipe_colours(sweep.recipes)
    mixes = sorted({(o.setting.mix_ratio, o.setting.mix_sources): o.setting.mix_label for o in outcomes}.items())
    style_of = {mix: LINE_STYLES[i % len(LINE_STYLES)] for i, (mix, _) in enumerate(mixes)}
    handles = _colour_handles(sweep.recipes, colours) + _style_handles([(style_of[m], label) for m, label in mixes])
    figure = _figure(7.0, 4.2, len(handles), columns=2)
    axes = figure.subplots()
    lines = _group_lines(outcomes, lambda s: (s.recipe, s.mix_ratio, s.mix_sources), lambda s: s.data_fraction)
    for (recipe, *mix), points in lines.items():
        axes.errorbar(
            [100 * o.setting.data_fraction for o in points],
            [o.final_id for o in points],
            yerr=[_spread(o, lambda t: t.final(TARGET_QUADRANT)) for o in points],
            color=colours[recipe],
            linestyle=style_of[tuple(mix)],
            marker="o",
            markersize=5,
            linewidth=1.8,
            capsize=3,
        )
    fractions = sorted({100 * o.setting.data_fraction for o in outcomes})
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(FixedLocator(fractions))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: format_percent(value / 100)))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set(
        xlabel="Target training data used (%, log scale)",
        ylabel="Final ID accuracy (%)",
        title="Final ID accuracy vs amount of target data",
    )
    axes.margins(x=0.08, y=0.12)
    _legend(figure, handles, columns=2)
    return figure


def spread_note(outcomes: list[Outcome]) -> str:
    """Caption note on the error bars, or '' when every setting has a single trial."""
    seeds = {len(o.trials) for o in outcomes}
    return (
        f"Error bars: sd over seeds ({', '.join(str(n) for n in sorted(seeds))} per setting)." if max(seeds) > 1 else ""
    )


def _mix_variant_label(fraction: float, sources: tuple[str, ...], show_fraction: bool) -> str:
    mixed = f"mixed with {'+'.join(sources)}" if sources else "mixed"
    return f"{mixed} · {format_percent(fraction)} data" if show_fraction else mixed


def mix_ratio_figure(sweep: Sweep, outcomes: list[Outcome]) -> Figure | None:
    """Paper Figure 4b as curves: final ID and OOD^T-ID^I accuracy vs mix ratio; None if not varied.

    Settings without mixing (ratio 0) start every line of the same recipe and data fraction."""
    if not sweep.varies_mix_ratio:
        return None
    colours = recipe_colours(sweep.recipes)
    unmixed = [o for o in outcomes if o.setting.mix_ratio == 0]
    lines = _group_lines(
        [o for o in outcomes if o.setting.mix_ratio > 0],
        lambda s: (s.recipe, s.data_fraction, s.mix_sources),
        lambda s: s.mix_ratio,
    )
    variants = sorted({(fraction, sources) for _, fraction, sources in lines}, key=lambda v: (-v[0], v[1]))
    style_of = {v: LINE_STYLES[i % len(LINE_STYLES)] for i, v in enumerate(variants)}
    show_fraction = len({fraction for fraction, _ in variants}) > 1
    handles = (
        _colour_handles([recipe for recipe, _, _ in lines], colours)
        + _style_handles([(style_of[v], _mix_variant_label(*v, show_fraction)) for v in variants])
        + [
            Line2D(
                [],
                [],
                color="0.35",
                linestyle=ZERO_SHOT_LEVEL,
                linewidth=1.2,
                label=f"zero-shot {quadrant_name('ood_id', 'tex')} accuracy",
            )
        ]
    )
    figure = _figure(11.5, 4.2, len(handles), columns=3)
    for axes, quadrant in zip(figure.subplots(1, 2), (TARGET_QUADRANT, "ood_id")):
        for (recipe, fraction, sources), mixed in lines.items():
            points = [o for o in unmixed if (o.setting.recipe, o.setting.data_fraction) == (recipe, fraction)] + mixed
            axes.errorbar(
                [100 * o.setting.mix_ratio for o in points],
                [o.final[quadrant] for o in points],
                yerr=[_spread(o, lambda t, q=quadrant: t.final(q)) for o in points],
                color=colours[recipe],
                linestyle=style_of[(fraction, sources)],
                marker="o",
                markersize=5,
                linewidth=1.8,
                capsize=3,
            )
            if quadrant != TARGET_QUADRANT:
                zero_shot = mean(t.zero_shot(quadrant) for o in points for t in o.trials)
                axes.axhline(zero_shot, color=colours[recipe], linestyle=ZERO_SHOT_LEVEL, linewidth=1.2)
        name = quadrant_name(quadrant, "tex")
        if quadrant == TARGET_QUADRANT:
            axes.set(ylabel="Final ID accuracy (%)", title=f"{name} (target task) vs mix ratio")
        else:
            axes.set(ylabel=f"Final {name} accuracy (%)", title=f"{name} vs mix ratio")
        axes.set_xlabel("Mixed-in share of training samples (%)")
        axes.margins(x=0.06, y=0.12)
    _legend(figure, handles, columns=3)
    figure.suptitle(
        "Data-hybrid training: target accuracy and OOD$^T$-ID$^I$ accuracy vs mix ratio", fontsize=12, fontweight="bold"
    )
    return figure


def render_figures(sweep: Sweep, outcomes: list[Outcome], out_dir: Path) -> list[FigureFile]:
    """Draw and save every figure that applies to the sweep; returns them in report order."""
    if not sweep.trials:
        raise AnalysisError(f"sweep {sweep.parent_run_name}: no trials to plot")
    seeds_note = " Seeds of a recipe share its colour." if any(len(o.trials) > 1 for o in outcomes) else ""
    spread = spread_note(outcomes)
    builders = (
        (
            "trajectory",
            "Trajectories: ID vs OOD accuracy",
            lambda: trajectory_figure(sweep),
            "Each line is one trial: its checkpoints in (ID accuracy, OOD accuracy) space, from the zero-shot "
            "model (star) to the last checkpoint (large dot); arrows point along training. Right panel: mean "
            f"of the three OOD quadrants.{seeds_note}",
        ),
        (
            "steps",
            "Accuracy vs training step",
            lambda: steps_figure(sweep),
            f"Accuracy of each quadrant at every evaluated checkpoint; step 0 is the zero-shot model.{seeds_note}",
        ),
        (
            "fraction",
            "Data fraction",
            lambda: fraction_figure(sweep, outcomes),
            f"Final ID accuracy vs the share of target training data used (log scale). {spread}".strip(),
        ),
        (
            "mix_ratio",
            "Mix ratio",
            lambda: mix_ratio_figure(sweep, outcomes),
            "Final ID and OOD^T-ID^I accuracy vs the share of training samples drawn from mixed-in data; "
            f"dotted: zero-shot OOD^T-ID^I accuracy. {spread}".strip(),
        ),
    )
    written = []
    with paper_style():
        for stem, title, build, caption in builders:
            figure = build()
            if figure is not None:
                png, svg = save_figure(figure, out_dir, stem)
                written.append(FigureFile(stem=stem, title=title, caption=caption, png=png, svg=svg))
    return written
