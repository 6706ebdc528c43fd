"""The bench plot: latency (model-only and end-to-end p50) against Dice, with the uncertainty of both.

Each point's vertical bar is the bootstrap 95 % interval of its Dice difference from the reference (placed at
the reference's Dice), its horizontal bar the min–max of its round medians; the y-axis spans at least ±1 Dice
point around the reference (2 points below 1.0 when the reference is within a point of it: a 0.003-point axis
makes noise look like a difference); the verdict's Dice limit is drawn and the artifacts that break a limit
crossed; labels are placed so that none overlaps another label, a point or the legend.
"""
from __future__ import annotations

from pathlib import Path

from edgeseg.benchmark.cells import (
    _e2e_p50,
    _metric,
    _model_p50,
    _per_label,
    _threads,
    data_line,
    headline,
    pareto_front,
    verdict_of,
)
from edgeseg.benchmark.tables import short_names
from edgeseg.data.io import atomic_write
from edgeseg.overwrite import PNG_SOFTWARE

ROLE_COLOURS = {"candidate": "tab:blue", "reference": "tab:green", "baseline": "tab:orange"}
MIN_HALF_RANGE = 0.01  # ±1 Dice point around the reference at least
DPI = 120
# label offsets from a point, in typographic points: near first, then further out (with a leader line)
_OFFSETS = [(7, 4), (7, -4), (-7, 4), (-7, -4)] + [(dx * r, dy * r) for r in (2, 3, 4, 5, 6)
                                                       for dx, dy in ((3, 5), (3, -6), (-3, 5), (-3, -6), (0, 7), (0, -8))]


def _rounds(timing: dict | None) -> tuple[float, float] | None:
    rounds = [r for r in (timing or {}).get("round_p50_ms") or [] if r]
    return (min(rounds), max(rounds)) if len(rounds) >= 2 else None


def _series(result: dict):
    """``(ylabel, reference y, labelled, {panel: [(artifact, x, y, (y low, y high) | None, (x low, x high) | None)]})``."""
    label, artifacts = headline(result), result["artifacts"]
    ref = next(a for a in artifacts if a["name"] == result["reference"])
    labelled = any(_metric(a, label, "dice") is not None for a in artifacts)
    if labelled:
        y_of, ylabel = (lambda a: _metric(a, label, "dice")), f"Dice {label} (vs ground truth)"
    else:
        y_of = lambda a: _per_label(a, "agreement", label)  # noqa: E731
        ylabel = f"agreement with {result['reference']} ({label}; no labels)"
    ref_y = y_of(ref)

    def y_err(a):
        drift = _per_label(a, "drift", label) or {}
        if ref_y is None or drift.get("low") is None or a is ref:
            return None
        return ref_y + drift["low"], ref_y + drift["high"]

    panels = {"model-only p50, batch 1 (ms)": (_model_p50, lambda a: (a.get("latency") or {}).get("batch_1")),
              "end-to-end p50 per case (ms)": (_e2e_p50, lambda a: a.get("end_to_end"))}
    series = {xlabel: [(a, x_of(a), y_of(a), y_err(a), _rounds(t_of(a))) for a in artifacts
                       if x_of(a) is not None and y_of(a) is not None]
              for xlabel, (x_of, t_of) in panels.items()}
    return ylabel, ref_y, labelled, series


def _draw_panel(ax, points, xlabel: str, ylabel: str, ref_y, limit: tuple[float, str] | None,
                broken: set[str]) -> None:
    """Points by role with their bars, the Pareto front, the reference line, the Dice limit and a red cross on
    the artifacts that break a limit (on any label)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    for role in dict.fromkeys(a["role"] for a, *_ in points):
        mine = [p for p in points if p[0]["role"] == role]
        xs, ys = [p[1] for p in mine], [p[2] for p in mine]
        yerr = [[max(0.0, y - (p[3] or (y, y))[0]) for p, y in zip(mine, ys)],
                [max(0.0, (p[3] or (y, y))[1] - y) for p, y in zip(mine, ys)]]
        xerr = [[max(0.0, x - (p[4] or (x, x))[0]) for p, x in zip(mine, xs)],
                [max(0.0, (p[4] or (x, x))[1] - x) for p, x in zip(mine, xs)]]
        ax.errorbar(xs, ys, yerr=yerr, xerr=xerr, fmt="o", color=ROLE_COLOURS.get(role, "tab:gray"), ecolor="0.55",
                    elinewidth=1, capsize=2, label=role, zorder=3)
    on_front = set(pareto_front([(a["name"], x, y) for a, x, y, *_ in points]))
    front = sorted((x, y) for a, x, y, *_ in points if a["name"] in on_front)
    ax.step(*zip(*front), where="post", color="black", linestyle="--", linewidth=1, label="Pareto front")
    ax.scatter(*zip(*front), s=180, facecolors="none", edgecolors="black", zorder=4)
    if crossed := [(x, y) for a, x, y, *_ in points if a["name"] in broken]:
        ax.scatter(*zip(*crossed), marker="x", s=90, color="tab:red", zorder=5, label="breaks a Dice limit")
    if ref_y is not None:
        ax.axhline(ref_y, color="tab:green", linewidth=0.8, alpha=0.6)
    if limit:
        ax.axhline(limit[0], color="tab:red", linewidth=1, linestyle=":", label=limit[1])
    lows = [min(y, (e or (y, y))[0]) for _, _, y, e, _ in points] + ([limit[0]] if limit else [])
    highs = [max(y, (e or (y, y))[1]) for _, _, y, e, _ in points]
    centre = ref_y if ref_y is not None else max(highs)
    high = max(max(highs), min(centre + MIN_HALF_RANGE, 1.0))  # Dice and agreement end at 1
    low = min(min(lows), centre - MIN_HALF_RANGE, high - 2 * MIN_HALF_RANGE)
    ax.set_ylim(low - 0.08 * (high - low), high + 0.08 * (high - low))
    xs = [x for _, x, *_ in points]
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    ax.margins(x=0.25)
    if ax.get_xscale() == "linear":
        ax.set_xlim(left=max(0.0, ax.get_xlim()[0]))
    ax.legend(fontsize=8, loc="lower right")


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def text_box(text, renderer):
    """The box of a label's text alone (an annotation's own extent includes its leader line)."""
    from matplotlib.text import Text

    if hasattr(text, "update_positions"):
        text.update_positions(renderer)  # where an annotation's offset puts its text
    return Text.get_window_extent(text, renderer)


def _place_labels(ax, points, names: dict[str, str], renderer) -> None:
    """Annotate each point with its short name where the label overlaps no other label, no point, not the
    legend and stays inside the axes; further out with a leader line when the near places are taken."""
    from matplotlib.transforms import Bbox

    inside = ax.get_window_extent(renderer)
    markers = [ax.get_legend().get_window_extent(renderer)] if ax.get_legend() else []
    for _, x, y, *_ in points:
        px, py = ax.transData.transform((x, y))
        markers.append(Bbox.from_extents(px - 5, py - 5, px + 5, py + 5))
    placed = []
    for a, x, y, *_ in sorted(points, key=lambda p: (-p[2], p[1])):
        best = None
        for dx, dy in _OFFSETS:
            far = abs(dx) > 7 or abs(dy) > 4
            text = ax.annotate(names[a["name"]], (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                               ha="left" if dx >= 0 else "right", va="bottom" if dy >= 0 else "top",
                               arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6} if far else None)
            box = text_box(text, renderer).expanded(1.04, 1.1)
            clashes = sum(_overlap(box, other) for other in placed + markers)
            fits = box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= inside.y0 and box.y1 <= inside.y1
            score = clashes + (0 if fits else 100)
            if best is None or score < best[0]:
                if best:
                    best[1].remove()
                best = (score, text, box)
            else:
                text.remove()
            if score == 0:
                break
        placed.append(best[2])


def pareto_figure(result: dict):
    """The two-panel figure (matplotlib ``Figure``), or None when no artifact has a latency and a Dice/agreement."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, touches no global backend

    ylabel, ref_y, labelled, series = _series(result)
    if not any(series.values()):
        return None
    limit = verdict_of(result)["limits"]["max_dice_drop_points"]
    limit_line = ((ref_y - limit / 100, f"the verdict's limit: −{limit:g} pts") if labelled and ref_y is not None
                  else None)
    fig = Figure(figsize=(13, 5.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    broken = {b["name"] for b in verdict_of(result)["breaks"]}
    for ax, (xlabel, points) in zip(axes, series.items()):
        _draw_panel(ax, points, xlabel, ylabel, ref_y, limit_line, broken)
    bars = ("vertical bars: bootstrap 95 % CI of the Dice difference from the reference; " if labelled else "")
    fig.suptitle(f"{data_line(result)} · {result['device']['cpu']['model']}, {_threads(result)}\n{bars}"
                 "horizontal bars: min–max of the round medians", fontsize=10)
    fig.canvas.draw()  # fix the layout, then place labels in its final coordinates
    fig.set_layout_engine("none")
    names = short_names(a["name"] for a in result["artifacts"])
    renderer = fig.canvas.get_renderer()
    for ax, points in zip(axes, series.values()):
        _place_labels(ax, points, names, renderer)
    return fig


def plot_pareto(result: dict, path: str | Path) -> Path | None:
    """:func:`pareto_figure` as a PNG at ``path``; None when matplotlib is missing or there is nothing to plot."""
    try:
        fig = pareto_figure(result)
    except ImportError:
        return None
    if fig is None:
        return None
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": PNG_SOFTWARE}))
    return path
