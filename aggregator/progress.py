"""How `aggregator update` shows its progress: a bar on a terminal, plain lines anywhere else.

The update calls `feed_done` once per finished feed, in the process that runs the update (the
worker processes that parse feeds never see it), so the cost is one call per feed and none per
entry. On a terminal a rich progress bar counts feeds done, of how many, and how many failed,
and log lines print above it. Anywhere else (a pipe, a log file, cron) a line every
`PLAIN_LINE_INTERVAL_SECONDS` tells how far the update got; `-v` adds the update's own line
per feed. rich is imported only when a bar is shown, so other commands start fast.
This module knows nothing of fetching or the database; it only counts and draws.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from aggregator.update import FeedResult

PLAIN_LINE_INTERVAL_SECONDS = 10.0
BAR_REFRESHES_PER_SECOND = 5
BAR_LABEL = "Polling feeds"
GROUPING_LABEL = "Grouping stories"


class FeedProgress(Protocol):
    def feed_done(self, result: FeedResult) -> None:
        """Count one finished feed (ok, not modified, failed or skipped)."""

    def grouping_stories(self) -> None:
        """Every feed is done; the new entries are being grouped into stories."""


class NoProgress:
    """For `-q`: nothing but errors."""

    def feed_done(self, result: FeedResult) -> None:
        pass

    def grouping_stories(self) -> None:
        pass


class PlainProgress:
    """A line now and then ("12/40 feeds polled, 1 failed") for pipes and log files; none for quick runs."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        clock: Callable[[], float] = time.monotonic,
        interval: float = PLAIN_LINE_INTERVAL_SECONDS,
    ) -> None:
        self.total = total
        self.stream = stream
        self.clock = clock
        self.interval = interval
        self.done = 0
        self.failed = 0
        self._last_line_at = clock()

    def feed_done(self, result: FeedResult) -> None:
        self.done += 1
        self.failed += result.status == "error"
        now = self.clock()
        # The last feed needs no line: the summary follows at once.
        if self.done < self.total and now - self._last_line_at >= self.interval:
            self._last_line_at = now
            self.stream.write(f"{self.done}/{self.total} feeds polled, {self.failed} failed\n")
            self.stream.flush()

    def grouping_stories(self) -> None:
        pass  # the summary line follows soon enough


class BarProgress:
    """A rich progress bar: feeds done of the total, failures in red, time elapsed."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress = progress
        self.task = task
        self.failed = 0

    def feed_done(self, result: FeedResult) -> None:
        if result.status == "error":
            self.failed += 1
            self.progress.update(self.task, advance=1, failures=f"[red]{self.failed} failed[/red]")
        else:
            self.progress.advance(self.task)

    def grouping_stories(self) -> None:
        self.progress.update(self.task, description=GROUPING_LABEL)


def shows_bar(stream: TextIO) -> bool:
    """A bar only where a person watches: a terminal that can redraw a line."""
    return stream.isatty() and os.environ.get("TERM") != "dumb"


@contextmanager
def update_progress(total: int, stream: TextIO, verbosity: int, log_format: str = "text") -> Iterator[FeedProgress]:
    """The progress display for an update of `total` feeds, written to `stream` (stderr).

    With JSON logs, a pipe gets no plain lines: a log collector reads one JSON object per line.
    """
    if verbosity < 0:
        yield NoProgress()
    elif shows_bar(stream):
        with progress_bar(total, stream) as bar:
            yield bar
    elif log_format == "text":
        yield PlainProgress(total, stream)
    else:
        yield NoProgress()


@contextmanager
def progress_bar(total: int, stream: TextIO, force_terminal: bool | None = None) -> Iterator[BarProgress]:
    """A rich bar on `stream` for the block, with the log lines of the block printed above it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=stream, force_terminal=force_terminal)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failures]}"),
        TimeElapsedColumn(),
        console=console,
        refresh_per_second=BAR_REFRESHES_PER_SECOND,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    with progress, _logs_above(progress, stream):
        task = progress.add_task(BAR_LABEL, total=total, failures="")
        yield BarProgress(progress, task)


@contextmanager
def _logs_above(progress: Progress, stream: TextIO) -> Iterator[None]:
    """Send the log handlers that write to `stream` through the bar's console, so that a
    warning prints above the bar instead of through it."""
    from rich.file_proxy import FileProxy

    proxy = FileProxy(progress.console, stream)
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is stream
    ]
    for handler in handlers:
        handler.setStream(proxy)
    try:
        yield
    finally:
        for handler in handlers:
            handler.setStream(stream)
