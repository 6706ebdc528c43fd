"""Showing a sensitivity result: a terminal table, a PNG bar chart, and the JSON on disk."""
from __future__ import annotations

import json
from pathlib import Path

from edgeseg.data.io import atomic_write
from edgeseg.overwrite import PNG_SOFTWARE


def _label(row: dict) -> str:
    return f"{row['module'] or row['name']} ({row['op_type']})"


def print_sensitivity(result: dict, top: int = 20) -> None:
    """The ``top`` most sensitive nodes: Dice points per label and agreement their INT8 execution costs (a CLI
    renderer, on stdout: ``edgeseg sensitivity`` calls it, the library never does)."""
    from rich.markup import escape
    from rich.table import Table

    from edgeseg.report import console

    labels = list(result["all_int8"]["delta"])
    verb = "come back when kept float" if result["mode"] == "float-one" else "are lost when quantized alone"
    table = Table(title=f"{result['checkpoint']['name']} · {len(result['nodes'])} quantized nodes · "
                        f"{len(result['tuning']['cases'])} {result['tuning']['dataset']} {result['tuning']['split']} "
                        f"cases · Dice points that {verb}")
    for col in ("#", "node", *labels, f"agreement {result['headline_label']}", "vanished"):
        table.add_column(col, justify="left" if col == "node" else "right")
    for i, row in enumerate(result["nodes"][:top], 1):
        table.add_row(str(i), escape(_label(row)), *(f"{row['dice_cost'][lab] * 100:+.3f}" for lab in labels),
                      f"{row['agreement_cost'][result['headline_label']]:+.4f}", str(row["vanished"]))
    console.print(table)
    base = result["all_int8"]
    console.print("all INT8 (preset float): ΔDice pts " + ", ".join(f"{k} {v * 100:+.3f}" for k, v in base["delta"].items())
                  + f"; {len(base['vanished'])} structure(s) vanished; {result['seconds']:.0f} s")


def plot_sensitivity(result: dict, path: str | Path, top: int = 25) -> Path | None:
    """Horizontal bars: the worst-label Dice cost (points) of the ``top`` most sensitive nodes."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    rows = result["nodes"][:top][::-1]
    fig = Figure(figsize=(9, 0.32 * len(rows) + 1.6))
    ax = fig.add_subplot()
    costs = [r["worst_label_cost"] * 100 for r in rows]
    ax.barh(range(len(rows)), costs, color=["tab:red" if c > 0 else "tab:gray" for c in costs])
    ax.set_yticks(range(len(rows)), [_label(r) for r in rows], fontsize=7)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"Dice points its INT8 execution costs (worst label; mode {result['mode']})")
    ax.set_title(f"{result['checkpoint']['name']}: INT8 sensitivity on {len(result['tuning']['cases'])} tuning cases",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, metadata={"Software": PNG_SOFTWARE}))
    return path


def write_sensitivity(result: dict, json_path: str | Path) -> dict[str, Path]:
    """The JSON (atomic) and the bar chart beside it (``.png``)."""
    json_path = Path(json_path)
    atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(result, indent=1, allow_nan=False)))
    paths = {"json": json_path}
    if png := plot_sensitivity(result, json_path.with_suffix(".png")):
        paths["png"] = png
    return paths
