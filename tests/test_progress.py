"""The update's progress display: plain lines for pipes and logs, a rich bar for terminals."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from aggregator.progress import NoProgress, PlainProgress, progress_bar, update_progress
from aggregator.update import FeedResult

OK = FeedResult("alpha", "ok", new=3)
FAILED = FeedResult("beta", "error", error="HTTP 500")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_come_at_most_once_per_interval_and_count_failures() -> None:
    out, clock = io.StringIO(), Clock()
    progress = PlainProgress(5, out, clock=clock, interval=10)
    progress.feed_done(OK)
    clock.now += 9
    progress.feed_done(FAILED)
    assert out.getvalue() == "", "a quick run prints nothing before its summary"
    clock.now += 2
    progress.feed_done(OK)
    assert out.getvalue() == "3/5 feeds polled, 1 failed\n"
    clock.now += 5
    progress.feed_done(OK)
    assert out.getvalue().count("\n") == 1
    clock.now += 60
    progress.feed_done(FAILED)
    assert out.getvalue().count("\n") == 1, "the last feed needs no line: the summary follows"


def test_without_a_terminal_the_display_is_plain_and_quiet_means_nothing() -> None:
    with update_progress(3, io.StringIO(), verbosity=0) as progress:
        assert isinstance(progress, PlainProgress)
    with update_progress(3, io.StringIO(), verbosity=-1) as progress:
        assert isinstance(progress, NoProgress)
    with update_progress(3, io.StringIO(), verbosity=1, log_format="json") as progress:
        assert isinstance(progress, NoProgress), "JSON log lines stay JSON"


@pytest.fixture
def stderr_log() -> Iterator[io.StringIO]:
    """The root logger writing to a fake stderr, as the CLI sets it up."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    yield stream
    root.handlers[:] = saved


def test_the_bar_counts_feeds_and_failures_and_logs_print_above_it(stderr_log: io.StringIO) -> None:
    with progress_bar(3, stderr_log, force_terminal=True) as bar:
        bar.feed_done(OK)
        bar.feed_done(FAILED)
        logging.getLogger("aggregator.update").warning("feed beta failed: HTTP 500")
        bar.feed_done(OK)
        bar.grouping_stories()
    text = ANSI.sub("", stderr_log.getvalue())
    assert "Polling feeds" in text and "3/3" in text and "1 failed" in text
    assert text.rstrip().splitlines()[-1].startswith("Grouping stories"), "the last frame says what is left"
    assert "feed beta failed: HTTP 500\n" in text, "the log line is whole, on its own line"
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler) and handler.stream is stderr_log, "logging is restored"


def test_plain_progress_never_imports_rich() -> None:
    """rich costs tens of milliseconds to import; only a terminal that shows the bar pays for it."""
    code = (
        "import io, sys, types\n"
        "from aggregator.progress import update_progress\n"
        "with update_progress(2, io.StringIO(), verbosity=0) as progress:\n"
        "    progress.feed_done(types.SimpleNamespace(feed='alpha', status='ok'))\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'rich'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout == "[]\n"
