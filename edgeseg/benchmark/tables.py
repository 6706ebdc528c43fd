"""Tables people read in a terminal or a log — bench's, compress's (and the demo's) and the gate's.

Names: :func:`short_names` turns ``x86-avx512-openvino-int8`` into ``ov-int8``, and lengthens a name again only
where two would read the same (``rtx-trt-int8`` / ``jetson-orin-trt-int8``), up to the full name, so no two
rows ever look alike. Layout: :func:`text_table` wraps a cell that does not fit (at 80 columns too), never
cuts it with an ellipsis.
"""
from __future__ import annotations

# words of baselines' names: dropped ("") or shortened, so that a name column fits 80 columns
WORDS = {"quantize": "", "static": "", "neural": "", "compressor": "inc"}
BASELINE_PREFIX, BASELINE_SHORT = "baseline:", "base:"
NAME_WIDTH = 22  # a longer name (e.g. a --baseline-checkpoint's) wraps in its cell


def runtime_words() -> dict[str, str]:
    """``{runtime: its word in short names}`` of every registered target (``short_name``, else its name)."""
    from edgeseg.targets.registry import registered_targets

    return {name: target.short_name or name for name, target in registered_targets().items()}


def _levels(name: str) -> list[str]:
    """Candidate display names of ``name``, shortest first, the last being ``name`` itself."""
    baseline = name.startswith(BASELINE_PREFIX)
    prefix = BASELINE_SHORT if baseline else ""
    runtimes = runtime_words()
    tokens = [runtimes.get(t, WORDS.get(t, t)) for t in name.removeprefix(BASELINE_PREFIX).split("-")]
    tokens = [t for t in tokens if t]
    at = next((i for i, t in enumerate(tokens) if t in runtimes.values()), 0)
    return list(dict.fromkeys([prefix + "-".join(tokens[at:]), prefix + "-".join(tokens), name]))


def short_names(names) -> dict[str, str]:
    """``{full name: display name}``: the shortest form of each that no other name of ``names`` shares."""
    names = list(dict.fromkeys(names))
    level = {n: 0 for n in names}
    while True:
        shown = {n: _levels(n)[level[n]] for n in names}
        clashing = [n for n in names if sum(s == shown[n] for s in shown.values()) > 1]
        if not clashing:
            return shown
        for n in clashing:
            level[n] = min(level[n] + 1, len(_levels(n)) - 1)
        if all(shown[n] == n for n in clashing):  # full names are unique; cannot happen for distinct names
            return {n: n for n in names}


def name_legend(mapping: dict[str, str]) -> list[str]:
    """One line ``ov-int8 = x86-avx512-openvino-int8`` per name shown shortened beyond ``base:`` for
    ``baseline:``, which one line explains."""
    lines = [f"{short} = {full}" for full, short in mapping.items()
             if short != full and short.replace(BASELINE_SHORT, BASELINE_PREFIX, 1) != full]
    if any(s.startswith(BASELINE_SHORT) for s in mapping.values()):
        lines.append(f"{BASELINE_SHORT} = a baseline bench built for comparison (named {BASELINE_PREFIX}<what> in the JSON)")
    return lines


def text_table(title: str | None, headers: list[str], rows: list[list[str]], text_columns: int = 1):
    """A Rich table whose cells wrap instead of being cut; the first ``text_columns`` columns left-aligned."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title and escape(title), box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False,
                  show_edge=False, collapse_padding=True)
    names = max((len(str(row[0]).split(" ")[0]) for row in rows), default=0)  # kept whole when they fit
    for i, header in enumerate(headers):
        table.add_column(escape(header), justify="left" if i < text_columns else "right", overflow="fold",
                         min_width=min(names, NAME_WIDTH) if i == 0 else None)
    for row in rows:
        table.add_row(*(escape(str(cell)) for cell in row))
    return table
