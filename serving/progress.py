"""Progress bars on stderr for the commands: reading a batch of inputs, training phases.

The bars show only on a terminal (off one they would leave an empty line before the output
or the error) and vanish when done, except the training phases, which stay with their time.
The work itself never prints: it calls back (``on_start``, ``on_file``, ``progress``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


def console() -> Any:
    """The stderr console every bar and batch summary prints to."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def reading(quiet: bool = False) -> Iterator[tuple[Callable[[int], None], Callable[[str], None]]]:
    """``(on_start, on_file)`` callbacks for a batch read: one bar, ``reading n/N``, the name
    of the file just read beside it, shown once there are two files or more."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = console()
    with Progress(TextColumn("[bold]reading"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.description}"), console=out,
                  disable=quiet or not out.is_terminal, transient=True) as progress:
        task = progress.add_task("", total=None, visible=False)

        def start(n: int) -> None:
            progress.update(task, total=n, visible=n > 1)

        def tick(name: str) -> None:
            progress.update(task, advance=1, description=Path(name).name[-40:])

        yield start, tick


def extract_with_progress(sources: Sequence[str | os.PathLike[str]], quiet: bool = False,
                          **kwargs: Any) -> Any:
    """``features.flows.extract`` with the reading bar."""
    from flockwatch.features.flows import extract

    with reading(quiet) as (start, tick):
        return extract(sources, on_file=tick, on_start=start, **kwargs)


def counting_files(label: str) -> Any:
    """A bar counting files read, for work that does not know their number in advance."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.completed} files"),
                    TimeElapsedColumn(), console=console(), transient=True)


@contextlib.contextmanager
def phases(quiet: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """One progress bar per training phase, fed by the trainer's ``progress`` callback (the
    training code never prints); finished phases stay, with their time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bars = Progress(TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console(), disable=quiet)
    tasks: dict[str, Any] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if not tasks:  # started by the first phase: a bad input fails in one line
            bars.start()
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total)
        bars.update(tasks[phase], completed=done, total=total)

    try:
        yield progress
    finally:
        if tasks:
            bars.stop()


@contextlib.contextmanager
def importing(quiet: bool = False) -> Iterator[Callable[[str, int, int], None] | None]:
    """A bar of bytes read per file for an import (``flockwatch vulns update``), fed by the
    importer's ``progress(name, done, total)`` callback; None off a terminal or when quiet."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    out = console()
    if quiet or not out.is_terminal:
        yield None
        return
    tasks: dict[str, Any] = {}
    with Progress(TextColumn("[bold]importing"), BarColumn(), DownloadColumn(),
                  TimeElapsedColumn(), TextColumn("{task.description}"), console=out,
                  transient=True) as bars:

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bars.add_task(Path(name).name[-40:], total=total or None)
            bars.update(tasks[name], completed=done)

        yield progress
