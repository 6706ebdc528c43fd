"""What ``edgeseg bench`` prints: an accuracy table and a speed table that fit 80 columns (short unique names,
cells that wrap), the names they shortened, the warnings, and the verdict last."""
from __future__ import annotations

from pathlib import Path

from edgeseg.benchmark.cells import (
    DASH,
    STATUS_NOTES,
    _main_cells,
    _threads,
    _warnings,
    data_line,
    headline,
    verdict_of,
)
from edgeseg.benchmark.load import LOAD_HEADERS, load_rows
from edgeseg.benchmark.tables import name_legend, short_names, text_table

ACCURACY = {"artifact": "artifact", "executed": "ran as", "dice": "Dice", "delta": "ΔDice pts [95 % CI]",
            "agree": "agree", "worst": "worst case"}  # vanished structures: a warning line each
SPEED = {"artifact": "artifact", "mb": "MB", "p50": "model ms", "x_ref": "× ref", "e2e": "e2e ms",
         "e2e_x_ref": "e2e × ref"}


def _rows(result: dict, columns: dict[str, str], names: dict[str, str]) -> list[list[str]]:
    rows = []
    for artifact in result["artifacts"]:
        cells = _main_cells(result, artifact)
        status = STATUS_NOTES.get(artifact["status"])
        cells["artifact"] = names[artifact["name"]] + (f" ({status})" if status else "")
        cells["executed"] = cells["executed"].split(" (")[0] if cells["executed"] != DASH else DASH
        rows.append([cells[key] for key in columns])
    return rows


def summary(result: dict) -> list:
    """Rich renderables, in order: heading, accuracy table, speed table, name legend, warnings, verdict."""
    from rich.text import Text

    names = short_names(a["name"] for a in result["artifacts"])
    label, reference = headline(result), names[result["reference"]]
    heading = (f"{Path(result['bundle']['path']).name} · {data_line(result)} · {result['device']['cpu']['model']}, "
               f"{_threads(result)}")
    out = [Text(heading, style="bold"),
           text_table(f"accuracy ({label}; Δ against {reference}; ran as: the precision the runtime executed)",
                      list(ACCURACY.values()), _rows(result, ACCURACY, names), text_columns=2),
           text_table(f"speed (p50: model only at batch 1, and end to end per case; × ref = {reference}'s p50 / this "
                      "p50, in brackets the min–max over rounds, ! rounds disagree beyond the noise)",
                      list(SPEED.values()), _rows(result, SPEED, names), text_columns=1)]
    if rows := load_rows(result, names):
        out.append(text_table("latency under load (one core kept busy that share of the time; × idle p50 = this / "
                              "the artifact's idle p50 of the same run)", LOAD_HEADERS, rows, text_columns=2))
    out += [Text(f"  {line}", style="dim") for line in name_legend(names)]
    out += [Text.assemble((kind, "bold yellow"), f": {text}") for kind, text in _warnings(result)]
    out.append(Text("verdict", style="bold"))
    out += [Text(f"  {line}") for line in verdict_of(result)["lines"]]
    return out
