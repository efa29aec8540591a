"""Progress of a long command on stderr: one helper for ``movierec data fetch``, ``import`` and ``train``.

On a terminal it draws a rich progress bar. Anywhere else (a pipe, a log file, a container, a test)
it draws nothing: byte counts go unreported, and steps become the plain lines that logs and tests
read, ``  epoch 3/10  loss 0.8123``. ::

    with Progress("bytes", transient=True) as progress:
        task = progress.track("importing u.data", total=size)
        import_ratings(engine, path, on_bytes=task.advance_hook)   # None off a terminal

    with Progress() as progress:
        task = progress.track("epoch", total=10)
        task.step(3, "loss 0.8123")        # the bar at 3/10, or the line above
        progress.line("fit 1 of 2 done")   # printed above the bars, or as it is
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

Unit = Literal["bytes", "steps"]


class Progress:
    """A progress display for one command, on ``stream`` (stderr by default).

    ``unit`` picks the columns: ``"bytes"`` shows size, speed and time left; ``"steps"`` shows
    ``done/total``, a note and the time elapsed. ``transient`` bars vanish when the command ends.
    """

    def __init__(self, unit: Unit = "steps", *, transient: bool = False, stream: TextIO | None = None) -> None:
        self.unit = unit
        self.transient = transient
        self.stream = stream if stream is not None else sys.stderr
        #: True when a bar is drawn (the stream is a terminal); False for plain lines.
        self.live = self.stream.isatty()
        self._bar: RichProgress | None = None

    def __enter__(self) -> Self:
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            if self.unit == "bytes":
                columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                           TimeRemainingColumn())
            else:
                columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[note]}"), TimeElapsedColumn())
            self._bar = RichProgress(*columns, console=Console(file=self.stream), transient=self.transient)
            self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def track(self, description: str, total: float | None = None) -> Task:
        """A new bar (``total`` None: not known yet); off a terminal, only what its steps print."""
        return Task(self, description, total)

    def line(self, message: str) -> None:
        """A line of output: above the bars on a terminal, as it is otherwise."""
        if self._bar is not None:
            self._bar.console.print(message, markup=False)
        else:
            print(message, file=self.stream, flush=True)


class Task:
    """One bar of a :class:`Progress`."""

    def __init__(self, progress: Progress, description: str, total: float | None) -> None:
        self.progress = progress
        self.description = description
        self.total = total
        bar = progress._bar
        self._id: TaskID | None = bar.add_task(description, total=total, note="") if bar is not None else None

    @property
    def live(self) -> bool:
        """Whether this task draws a bar."""
        return self._id is not None

    def advance(self, amount: float) -> None:
        """``amount`` more done (bytes read, say); drawn on a terminal only."""
        if self._id is not None and self.progress._bar is not None:
            self.progress._bar.advance(self._id, amount)

    def update(self, completed: float, total: float | None = None) -> None:
        """``completed`` done in all, of ``total`` when it became known; drawn on a terminal only."""
        if self._id is not None and self.progress._bar is not None:
            self.progress._bar.update(self._id, completed=completed, total=total if total is not None else self.total)

    def step(self, completed: int, note: str = "") -> None:
        """Step ``completed`` of ``total`` is done: the bar moves, or a plain line says so."""
        if self._id is not None and self.progress._bar is not None:
            self.progress._bar.update(self._id, completed=completed, note=note)
            return
        total = "" if self.total is None else f"/{int(self.total) if float(self.total).is_integer() else self.total}"
        self.progress.line(f"  {self.description} {completed}{total}" + (f"  {note}" if note else ""))

    @property
    def advance_hook(self) -> Callable[[float], None] | None:
        """:meth:`advance` for code that reports progress, or None off a terminal (it need not count)."""
        return self.advance if self.live else None

    @property
    def update_hook(self) -> Callable[[float, float | None], None] | None:
        """:meth:`update` for code that reports progress, or None off a terminal (it need not count)."""
        return self.update if self.live else None
