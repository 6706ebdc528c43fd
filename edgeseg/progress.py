"""Progress bars with ETA for long work (Rich, which Typer ships with), drawn on stderr, and the filter that
keeps a library's known, harmless log messages off it."""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

# logs and CI are not terminals: give tables room instead of Rich's 80-column default
console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)
T = TypeVar("T")


class _Eta(TimeRemainingColumn):
    """Rich's estimate from the average speed so far, or the task's own ``eta`` field (seconds) when the work
    knows better (training: steps of different cost per resolution, a time limit)."""

    def render(self, task) -> Text:
        eta = task.fields.get("eta")
        if eta is None or task.finished:
            return super().render(task)
        minutes, seconds = divmod(int(round(eta)), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


def progress_bar(transient: bool = False, disable: bool = False) -> Progress:
    """A bar showing done/total, elapsed time, ETA and a free ``info`` field (``add_task(..., info="")``); a task
    given an ``eta`` field (seconds, ``bar.update(task, eta=…)``) shows that instead of Rich's estimate."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), _Eta(),
                    TextColumn("{task.fields[info]}"), console=console, transient=transient,
                    disable=disable)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    items = list(items) if total is None else items
    with progress_bar(transient=True) as bar:
        task = bar.add_task(description, total=total if total is not None else len(items), info="")
        for item in items:
            yield item
            bar.advance(task)


@contextlib.contextmanager
def silenced(logger: str, *starts: str) -> Iterator[None]:
    """Drop the records of one library logger whose message starts with any of ``starts`` while the block runs
    (precisely those messages: the logger's other warnings still show)."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(starts)

    target = logging.getLogger(logger)
    target.addFilter(keep)
    try:
        yield
    finally:
        target.removeFilter(keep)
