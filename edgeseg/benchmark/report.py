"""What people read from an ``edgeseg bench`` result: a Markdown report, a terminal summary, a Pareto plot."""
from __future__ import annotations

import json
from pathlib import Path

from edgeseg.benchmark.cells import (
    DASH,
    _changes,
    _e2e_p50,
    _main_cells,
    _metric,
    _model_p50,
    _num,
    _per_label,
    _points_ci,
    _threads,
    _warnings,
    data_line,
    headline,
    verdict_of,
)
from edgeseg.benchmark.cells import pareto_front as pareto_front  # re-exported: this module was its home
from edgeseg.benchmark.profile import profile_section
from edgeseg.benchmark.ratios import signed
from edgeseg.data.io import atomic_write

MAX_CHANGES_LISTED = 20
METRICS = ("dice", "iou", "sensitivity", "specificity")
GPU_VERSIONS = {"driver": "driver", "cuda": "CUDA", "tensorrt": "TensorRT"}


def _ratio(numerator: float | None, denominator: float | None) -> str:
    return DASH if not numerator or not denominator else f"{numerator / denominator:.2f}×"


def _markdown_headers(result: dict) -> dict[str, str]:
    label, batch = headline(result), max(result["settings"]["batch_sizes"])
    return {"artifact": "artifact", "role": "role", "executed": "executed precision", "mb": "MB",
            "dice": f"Dice {label}", "delta": "ΔDice pts [95 % CI]", "agree": "agreement", "worst": "worst case",
            "changes": "vanished/appeared", "hd95": f"HD95 {label}", "p50": "model p50 ms (b1)", "x_ref": "× ref",
            "throughput": f"img/s (b{batch})", "e2e": "e2e p50 ms", "e2e_x_ref": "e2e × ref",
            "cold": "cold start s", "rss": "peak RSS MB"}


def baseline_rows(result: dict) -> list[list[str]]:
    """[artifact, baseline, model speed-up, e2e speed-up, Dice difference in points] for each candidate
    (a compressed bundle artifact) with latency against the reference and each baseline with latency."""
    label, artifacts = headline(result), result["artifacts"]
    baselines = [b for b in artifacts if b["role"] in ("reference", "baseline") and _model_p50(b) is not None]
    rows = []
    for a in artifacts:
        if a["role"] != "candidate" or not a.get("latency"):
            continue
        for b in baselines:
            dice_a, dice_b = _metric(a, label, "dice"), _metric(b, label, "dice")
            dice_diff = DASH if dice_a is None or dice_b is None else signed((dice_a - dice_b) * 100, 2)
            rows.append([a["name"], b["name"], _ratio(_model_p50(b), _model_p50(a)),
                         _ratio(_e2e_p50(b), _e2e_p50(a)), dice_diff])
    return rows


def _device_line(result: dict) -> str:
    """CPU model, ISA flags, threads, then GPU and Jetson when present."""
    device, cpu = result["device"], result["device"]["cpu"]
    parts = [f"{cpu['model']} ({cpu['arch']}; {', '.join(cpu['isa']) or 'no INT8/BF16 ISA flags'})",
             _threads(result), f"{cpu['usable_cores']} of {cpu['logical_cores']} cores usable",
             f"{device['ram_gib']} GiB RAM", device["os"], f"Python {device['python']}"]
    if gpu := device.get("gpu"):
        extras = ", ".join(f"{name} {gpu[k]}" for k, name in GPU_VERSIONS.items() if gpu.get(k))
        parts.append(f"GPU {gpu.get('name') or 'NVIDIA'}" + (f" ({extras})" if extras else ""))
    if jetson := device.get("jetson"):
        power = jetson.get("power_mode") and f"power mode {jetson['power_mode']}"
        parts.append(", ".join(filter(None, [jetson.get("model") or "Jetson", jetson.get("l4t_release"), power])))
    return " · ".join(parts)


def _noise_text(verdict: dict) -> str:
    noise = verdict.get("noise") or {}
    return f"{noise['relative']:.0%}, {noise['source']}" if noise.get("relative") is not None else "not known"


def _md_table(headers: list[str], rows: list[list[str]], text_columns: int) -> list[str]:
    """A pipe table; the first ``text_columns`` columns left-aligned, the numbers right-aligned."""
    align = ["---" if i < text_columns else "---:" for i in range(len(headers))]
    return ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in [headers, align, *rows]]


FOOTNOTE = """\
- **Dice** (and IoU, sensitivity, specificity, HD95) is against the ground truth, averaged over cases; HD95 over the
  cases where it is defined, in the data's spacing units (mm for NIfTI).
- **ΔDice** is the artifact's Dice minus the reference's (`{reference}`), in Dice points (1 point = 0.01 Dice),
  with a bootstrap 95 % confidence interval over cases (BCa; n/a with a single case). **Worst case**: the case
  with the largest drop.
- **Agreement** is the mean Dice between the artifact's masks and the reference's masks: it needs no labels.
- **Model-only latency**: the runner alone on an already preprocessed batch (p50 over the repeats, batch 1 unless
  stated; img/s = batch / p50). **End-to-end**: per case, read the file(s) + preprocess + infer (whole sliding
  window / all slices) + postprocess + write the mask file, every round. **× ref** = the reference's p50 / this
  p50; in brackets the min–max of the same ratio in each round, **!** when the rounds disagree by more than the
  run's noise ({noise}).
- Every latency is measured in its own process (one per artifact and round), so runtimes cannot disturb each other;
  cold start = session creation / engine load + first run, peak RSS = that worker process's."""


def _per_label_section(result: dict) -> list[str]:
    rows = []
    for a in (a for a in result["artifacts"] if a.get("accuracy")):
        accuracy = a["accuracy"]
        for label in dict.fromkeys([*(accuracy.get("mean") or {}), *(accuracy.get("agreement") or {})]):
            drift = DASH if a["name"] == result["reference"] else _points_ci(_per_label(a, "drift", label))
            rows.append([a["name"], label, *(_num(_metric(a, label, m), ".4f") for m in METRICS),
                         _num(_metric(a, label, "hd95"), ".2f"), drift, _num(_per_label(a, "agreement", label), ".4f")])
    if not rows:
        return ["No artifact has accuracy results."]
    return _md_table(["artifact", "label", "Dice", "IoU", "sens", "spec", "HD95", "ΔDice pts [95 % CI]",
                      "agreement"], rows, text_columns=2)


def _baseline_section(result: dict) -> list[str]:
    if rows := baseline_rows(result):
        return [*_md_table(["artifact", "baseline", "model p50 speed-up", "e2e speed-up",
                            f"Dice {headline(result)} diff pts"], rows, text_columns=2), "",
                *(f"- `{b['name']}`: {b['description']}" for b in result["artifacts"] if b["role"] != "candidate")]
    why = "no baseline has latency" if result["settings"]["compare_baselines"] else "baselines were not requested"
    return [f"No comparison: {why}, or no low-precision bundle artifact was timed."]


def _changes_section(result: dict) -> list[str]:
    lines = []
    for a in result["artifacts"]:
        changes = _changes(a)
        lines += [f"- `{a['name']}`: {c['label']} **{c['change']}** in `{c['case']}` (reference {c['reference_voxels']}"
                  f" voxels, artifact {c['artifact_voxels']})" for c in changes[:MAX_CHANGES_LISTED]]
        if len(changes) > MAX_CHANGES_LISTED:
            lines.append(f"- `{a['name']}`: … and {len(changes) - MAX_CHANGES_LISTED} more")
    return lines or ["No structure of the reference masks vanished or appeared."]


def markdown_report(result: dict) -> str:
    """The whole result as Markdown: context, verdict, main table, per label, against baselines, structure changes,
    notes."""
    bundle, artifacts, headers = result["bundle"], result["artifacts"], _markdown_headers(result)
    versions = ", ".join(f"{k} {v}" for k, v in result["device"]["versions"].items() if v) or DASH
    command = f", `{result['command']}`" if result.get("command") else ""
    source = (bundle.get("source_checkpoint") or {}).get("name", "?")
    lines = [f"# edgeseg bench: `{Path(bundle['path']).name}` (from `{source}`)", "",
             f"- Data: {data_line(result)}; headline label `{headline(result)}`",
             f"- Device: {_device_line(result)}", f"- Versions: {versions}",
             f"- Run: {result['created']}, edgeseg {result['edgeseg_version']}, {result['seconds']:.0f} s{command}",
             *([f"- Pruning: {bundle['pruning']}"] if bundle.get("pruning") else []),
             *(f"- **{kind}**: {text}" for kind, text in _warnings(result)),
             "", "## Verdict", "", *(f"- {line}" for line in verdict_of(result)["lines"]),
             "", "## Results", "",
             *_md_table(list(headers.values()), [[cells[k] for k in headers] for cells in
                                                 (_main_cells(result, a) for a in artifacts)], text_columns=3),
             "", "## Per label", "", *_per_label_section(result),
             "", "## Against what users would pick instead", "", *_baseline_section(result),
             "", "## Structure changes", "", *_changes_section(result),
             "", *_load_section(result),
             "", *profile_section(result),
             "", *_explain_section(result),
             "", "## Notes", "",
             *([f"- {note}" for note in result.get("notes") or []]
               + [f"- `{a['name']}`: {note}" for a in artifacts for note in a.get("notes") or []] or ["None."]),
             "", "---", "", FOOTNOTE.format(reference=result["reference"], noise=_noise_text(verdict_of(result))), ""]
    return "\n".join(lines)


def _explain_section(result: dict) -> list[str]:
    from edgeseg.explanation.report import drift_table

    explained = result.get("explain")
    if not explained:
        return []
    return ["## Explanation drift", "", f"Against {explained['reference']['name']} on the first "
            f"{len(explained['cases'])} cases (bench --explain; `edgeseg explain` draws the pictures); sanity checks "
            f"passed: {', '.join(m for m, c in explained['sanity'].items() if c['passed']) or 'none'}.", "",
            *drift_table(explained), "", explained["verdict"]]


def _load_section(result: dict) -> list[str]:
    from edgeseg.benchmark.load import LOAD_HEADERS, load_rows

    rows = load_rows(result)
    if not rows:
        return []
    return ["## Under load", "", "One core kept busy that share of every 10 ms by a spinning process at normal "
            "priority while each artifact was timed again (its own process per round); × idle p50: against the "
            "artifact's idle p50 of this run.", "", *_md_table(LOAD_HEADERS, rows, text_columns=2)]


COMPACT_COLUMNS = ("artifact", "executed", "mb", "dice", "delta", "agree", "worst", "p50", "x_ref", "throughput",
                   "e2e", "e2e_x_ref", "cold", "rss")


def compact_table(result: dict, columns: tuple[str, ...] = COMPACT_COLUMNS) -> list[str]:
    """The main table with fewer columns (Markdown lines), e.g. for a README that shows several results."""
    headers = _markdown_headers(result)
    rows = [[cells[k] for k in columns] for cells in (_main_cells(result, a) for a in result["artifacts"])]
    return _md_table([headers[k] for k in columns], rows, text_columns=2)


def print_bench_summary(result: dict, console=None) -> None:
    """The terminal summary (:func:`edgeseg.benchmark.terminal.summary`) on ``console`` (default: stdout's)."""
    from edgeseg.benchmark.terminal import summary
    from edgeseg.report import console as default

    for item in summary(result):
        (console or default).print(item)


def write_reports(result: dict, json_path: str | Path) -> dict[str, Path]:
    """Write the result JSON, the Markdown report (``.md``) and the Pareto plot (``.png``) side by side.
    The JSON goes first so a measurement survives a failing report; keys: json, markdown, png (when drawn)."""
    json_path = Path(json_path)
    text = json.dumps(result, indent=1, allow_nan=False) + "\n"
    atomic_write(json_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    paths = {"json": json_path, "markdown": json_path.with_suffix(".md")}
    markdown = markdown_report(result)
    atomic_write(paths["markdown"], lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
    from edgeseg.benchmark.plot import plot_pareto

    if (png := plot_pareto(result, json_path.with_suffix(".png"))) is not None:
        paths["png"] = png
    return paths
