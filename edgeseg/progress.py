"""Progress bars with ETA for long work (Rich, which Typer ships with), drawn on stderr."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# logs and CI are not terminals: give tables room instead of Rich's 80-column default
console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)
T = TypeVar("T")


def progress_bar(transient: bool = False) -> Progress:
    """A bar showing done/total, elapsed time, ETA and a free ``info`` field (``add_task(..., info="")``)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}"), console=console, transient=transient)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    items = list(items) if total is None else items
    with progress_bar(transient=True) as bar:
        task = bar.add_task(description, total=total if total is not None else len(items), info="")
        for item in items:
            yield item
            bar.advance(task)
