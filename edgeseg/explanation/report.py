"""Writing an explain result: ``explain.json``, ``explain.md`` (drift per artifact, method and label; sanity; the
verdict), per artifact a PNG of its worst cases (image · reference mask · reference map · artifact map ·
difference) and ``calibration.png`` (reliability diagrams). Every file goes to a temp path, then is renamed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeseg.data.io import atomic_write
from edgeseg.overwrite import PNG_SOFTWARE, check_overwrite
from edgeseg.util import jsonable, slug


def output_paths(out: Path, artifact_names: list[str]) -> dict[str, Path]:
    """Every file a run into ``out`` writes (checked against the overwrite rule before any work)."""
    paths = {"json": out / "explain.json", "markdown": out / "explain.md", "calibration": out / "calibration.png"}
    paths.update({f"panels:{name}": out / f"explain_{slug(name)}.png" for name in artifact_names})
    return paths


def check_outputs(out: Path, artifact_names: list[str], force: bool) -> None:
    """Refuse before any work to replace a file edgeseg did not write, or one it did without ``force``."""
    if out.exists() and not out.is_dir():
        from edgeseg.errors import UsageError

        raise UsageError(f"{out}: exists and is not a folder")
    check_overwrite(*output_paths(out, artifact_names).values(), force=force)


def _fmt(ci: dict, digits: int = 3) -> str:
    if ci["mean"] is None:
        return "–"
    spread = f" [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]" if ci["low"] is not None else ""
    return f"{ci['mean']:.{digits}f}{spread}"


def markdown(result: dict) -> str:
    """The report as Markdown: its first line names edgeseg (the overwrite rule recognises it)."""
    lines = [f"# edgeseg explain: {Path(result['bundle']).name} on {result['dataset']} {result['split']} "
             f"({len(result['cases'])} cases)", "",
             f"Reference: **{result['reference']['name']}** (forward-only maps run by "
             f"{result['reference']['forward_maps_by']}). Means over cases with 95 % bootstrap intervals; "
             "ρ = Spearman rank correlation of the maps, IoU = of their top 10 % pixels, ΔAUC = artifact − "
             "reference (deletion: lower is a sharper map; insertion: higher).", "", "## Sanity checks", "",
             "| method | identical: ρ / IoU | random weights: mean ρ | reported |", "|---|---|---|---|"]
    for method, check in result["sanity"].items():
        same, rnd = check["identical"], check["randomized"]
        rho = "–" if rnd["rank_correlation"] is None else f"{rnd['rank_correlation']:.3f}"
        same_rho = "–" if same["rank_correlation"] is None else f"{same['rank_correlation']:.3f}"
        same_iou = "–" if same["top10_iou"] is None else f"{same['top10_iou']:.3f}"
        lines.append(f"| {method} | {same_rho} / {same_iou} | {rho} | "
                     f"{'yes' if check['passed'] else 'no: ' + check['why']} |")
    lines += ["", "## Explanation drift against the reference", "", *drift_table(result), *attention_table(result)]
    lines += ["", "## Dice drift, calibration and cost of the same runs", "",
              "| artifact | ΔDice points (vs reference) | ECE (reference → artifact) | entropy, nats | seconds | "
              "forward passes |", "|---|---|---|---|---|---|"]
    ref_cal = result["reference"]["calibration"]
    for name, entry in result["artifacts"].items():
        dice = ", ".join(f"{lab} {_fmt(ci, 2)}" for lab, ci in (entry["dice_drift_points"] or {}).items()) or "–"
        cal = entry["calibration"]
        ece = "–" if not cal or not ref_cal else ", ".join(
            f"{lab} {ref_cal['labels'][lab]['ece']:.4f} → {cal['labels'][lab]['ece']:.4f}" for lab in cal["labels"])
        entropy = "–" if not cal or not ref_cal else f"{ref_cal['entropy']:.4f} → {cal['entropy']:.4f}"
        lines.append(f"| {name} | {dice} | {ece} | {entropy} | {entry['seconds']:.1f} | {entry['forward_passes']} |")
    if result["not_explained"]:
        lines += ["", "Not explained: " + "; ".join(f"{n}: {why}" for n, why in result["not_explained"].items())]
    lines += ["", f"Settings: {json.dumps(result['settings'])}", "", "## Verdict", "", result["verdict"], ""]
    return "\n".join(lines)


def drift_table(result: dict) -> list[str]:
    """The drift per artifact, method and label as Markdown table lines (also in bench's report)."""
    lines = ["| artifact | method | label | ρ | top-10 % IoU | ΔAUC deletion | ΔAUC insertion | worst case (ρ) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, entry in result["artifacts"].items():
        for method, labels in entry["methods"].items():
            if "withheld" in labels:
                lines.append(f"| {name} | {method} | – | withheld: {labels['withheld']} | | | | |")
                continue
            for label, row in labels.items():
                worst = ", ".join(f"{w['case']} ({w['rank_correlation']:.2f})" for w in row["worst"][:1])
                lines.append(f"| {name} | {method} | {label} | {_fmt(row['rank_correlation'])} | "
                             f"{_fmt(row['top10_iou'])} | {_fmt(row['deletion_auc_change'], 4)} | "
                             f"{_fmt(row['insertion_auc_change'], 4)} | {worst} |")
    return lines


def attention_table(result: dict) -> list[str]:
    """The attention-gate coefficients' drift per artifact and gate (Markdown lines; none without gates)."""
    record = result.get("attention_gates")
    if not record:
        return []
    lines = ["", "### Attention-gate coefficients", "", "Each gate's coefficients α (where it lets the skip "
             "connection through), read from the artifact in its own runtime, against the reference's.", "",
             "| artifact | gate | ρ | top-10 % IoU | worst case (ρ) |", "|---|---|---|---|---|"]
    for name, entry in result["artifacts"].items():
        for gate, row in (entry.get("attention") or {}).items():
            worst = ", ".join(f"{w['case']} ({w['rank_correlation']:.2f})" for w in row["worst"][:1])
            lines.append(f"| {name} | {gate} | {_fmt(row['rank_correlation'])} | {_fmt(row['top10_iou'])} | {worst} |")
    lines += [f"\nNot read: {name}: {why}" for name, why in record["not_read"].items()]
    return lines


def _normalized(saliency: np.ndarray) -> np.ndarray:
    low, high = float(saliency.min()), float(saliency.max())
    return (saliency - low) / (high - low) if high > low else np.zeros_like(saliency)


def _middle(array: np.ndarray, region: np.ndarray) -> np.ndarray:
    """A 2D view: the array itself, or for a volume the slice through the region's centre along the last axis."""
    if array.ndim == 2:
        return array
    where = np.argwhere(region)
    index = int(where[:, -1].mean()) if len(where) else array.shape[-1] // 2
    return array[..., index]


def panels_figure(outcome, artifact, label_names: list[str]):
    """Rows: the artifact's worst cases (by the headline map's ρ); columns: image · reference mask ·
    reference map · artifact map · difference. None without matplotlib or a map to show."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    method = outcome.result["headline_method"]
    entry = outcome.result["artifacts"][artifact.name]["methods"].get(method, {}) if method else {}
    rows = [(label, w["case"], w["rank_correlation"]) for label, row in entry.items() if isinstance(row, dict)
            for w in row["worst"]]
    rows = sorted(rows, key=lambda r: r[2])[:3]
    if not rows:
        return None
    fig = Figure(figsize=(12, 2.6 * len(rows)))
    titles = ("image (model input)", "reference mask", "reference map", f"{artifact.name} map", "difference")
    for r, (label, cid, rho) in enumerate(rows):
        index = label_names.index(label)
        x, regions = outcome.inputs[cid]
        ref = _normalized(outcome.reference.cases[cid].maps[method][index])
        art = _normalized(artifact.cases[cid].maps[method][index])
        views = [(x[0], "gray"), (regions[index].astype(float), "gray"), (ref, "inferno"), (art, "inferno"),
                 (art - ref, "coolwarm")]
        for c, (view, cmap) in enumerate(views):
            ax = fig.add_subplot(len(rows), 5, r * 5 + c + 1)
            limits = {"vmin": -1, "vmax": 1} if c == 4 else {}
            ax.imshow(_middle(view, regions[index]), cmap=cmap, **limits)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(titles[c] if r == 0 else "", fontsize=8)
        fig.axes[r * 5].set_ylabel(f"{cid}\n{label} ρ {rho:.2f}", fontsize=8)
    fig.suptitle(f"{artifact.name}: worst cases by {method} map rank correlation with the reference's", fontsize=10)
    fig.tight_layout()
    return fig


def calibration_figure(result: dict):
    """Reliability diagrams per label: the reference and every artifact (None without matplotlib or labels)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    curves = {result["reference"]["name"] + " (reference)": result["reference"]["calibration"]}
    curves.update({name: e["calibration"] for name, e in result["artifacts"].items()})
    curves = {n: c for n, c in curves.items() if c}
    if not curves:
        return None
    labels = list(next(iter(curves.values()))["labels"])
    fig = Figure(figsize=(4.2 * len(labels), 4))
    for i, label in enumerate(labels):
        ax = fig.add_subplot(1, len(labels), i + 1)
        ax.plot([0, 1], [0, 1], color="gray", linewidth=0.8, linestyle=":")
        for name, cal in curves.items():
            points = [(c, a) for c, a, share in cal["labels"][label]["reliability"] if share > 0]
            ax.plot(*zip(*points), marker="o", markersize=3, label=f"{name} (ECE {cal['labels'][label]['ece']:.4f})")
        ax.set_xlabel("predicted probability"), ax.set_ylabel("observed frequency")
        ax.set_title(f"{label}: reliability", fontsize=10)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def write_outputs(outcome, out: Path, force: bool = False) -> dict[str, Path]:
    """Write the JSON, the Markdown and the pictures into ``out``; returns what was written."""
    out = Path(out)
    result = outcome.result
    paths = output_paths(out, [a.name for a in outcome.artifacts])
    check_outputs(out, [a.name for a in outcome.artifacts], force)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    text = json.dumps(jsonable(result), indent=1, allow_nan=False)
    atomic_write(paths["json"], lambda tmp: tmp.write_text(text, encoding="utf-8"))
    atomic_write(paths["markdown"], lambda tmp: tmp.write_text(markdown(result), encoding="utf-8"))
    written.update(json=paths["json"], markdown=paths["markdown"])
    figures = {"calibration": calibration_figure(result)}
    for artifact in outcome.artifacts:
        figures[f"panels:{artifact.name}"] = panels_figure(outcome, artifact, result["label_names"])
    for key, fig in figures.items():
        if fig is not None:
            atomic_write(paths[key], lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=100,
                                                                       metadata={"Software": PNG_SOFTWARE}))
            written[key] = paths[key]
    return written

