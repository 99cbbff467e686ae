"""An update of many feeds groups the new entries into stories while it polls (in a worker process).

The stories must be exactly those that grouping everything after the polls gives for the same
stored entries, and a worker that fails must cost nothing but time. Ten outlets on a loopback
server report the same events in their own words; their entries are more than one lot for the
story worker (`workers.STORY_LOT`), so the worker runs.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator import workers
from aggregator.config import load_settings
from aggregator.store import Store
from aggregator.stories import StoryIndex, assign_pending
from aggregator.update import update_feeds
from tests.e2e.cli import write_config
from tests.feedgen import rss
from tests.feedserver import FeedServer

OUTLETS = 10
EVENTS = 64
REPORTS_PER_EVENT = 5  # so each outlet reports 32 events: 320 entries
SUBJECTS = ("Quillon", "Marrowind", "Tessaract", "Bellweather", "Ostrava", "Penumbra", "Halcyon", "Zephyrine")
KINDS = ("exchange", "lender", "wallet maker", "mining firm", "custodian", "stablecoin issuer", "bank", "fund")
HAPPENINGS = (
    ("halts withdrawals after a hot wallet exploit", "pauses withdrawals as attackers drain a hot wallet"),
    ("wins approval for a spot bitcoin fund", "gets the regulator's approval to list a spot bitcoin fund"),
    ("lays off a fifth of its staff", "cuts a fifth of its workforce in a new round of layoffs"),
    ("is sued by the SEC over unregistered securities", "faces an SEC lawsuit over unregistered securities"),
    ("launches a dollar stablecoin on three chains", "debuts a dollar-backed stablecoin across three networks"),
    ("acquires a European broker for an undisclosed sum", "buys a European brokerage in an undisclosed deal"),
    ("files for bankruptcy protection", "enters bankruptcy after a run on deposits"),
    ("partners with a payments giant on card rewards", "teams up with a payments giant for crypto card rewards"),
)
PHRASINGS = (
    "{subject} {first}",
    "{subject} {second}",
    "Report: {subject} {first}",
    "{subject} {second}, people familiar say",
    "Breaking: {subject} {first}",
)


def outlet_feeds(now: datetime) -> dict[int, list[tuple[str, str, datetime]]]:
    """Each outlet's items (guid, title, published): every event told by five outlets in their words."""
    items: dict[int, list[tuple[str, str, datetime]]] = {outlet: [] for outlet in range(OUTLETS)}
    for event in range(EVENTS):
        subject = f"{SUBJECTS[event % len(SUBJECTS)]} {KINDS[event // len(SUBJECTS) % len(KINDS)]}"
        first, second = HAPPENINGS[(event * 3) % len(HAPPENINGS)]
        happened = now - timedelta(minutes=50 * event)
        for report in range(REPORTS_PER_EVENT):
            outlet = (event + 2 * report) % OUTLETS
            title = PHRASINGS[report].format(subject=subject, first=first, second=second)
            items[outlet].append((f"outlet{outlet}-event{event}", title, happened + timedelta(minutes=9 * report)))
    return items


@pytest.fixture
def many_feeds(tmp_path: Path, feed_server: FeedServer) -> Path:
    if min(os.cpu_count() or 1, workers.MAX_PARSE_WORKERS) < 2:
        pytest.skip("parsing (and so grouping) uses worker processes only with two cores or more")
    now = datetime.now(UTC).replace(microsecond=0)
    feeds = {
        f"outlet{outlet}": feed_server.add(f"/outlet{outlet}.xml", rss(f"Outlet {outlet}", items))
        for outlet, items in outlet_feeds(now).items()
    }
    return write_config(tmp_path, feeds)


def stories_of(conn: sqlite3.Connection) -> tuple[dict[int, int], list[tuple[object, ...]]]:
    """Each entry's story, and every story row as saved."""
    members = dict(conn.execute("SELECT id, story_id FROM entries").fetchall())
    rows = conn.execute("SELECT id, uid, headline, first_entry_id, first_seen, last_seen, feeds, size FROM stories")
    return members, sorted(tuple(row) for row in rows)


def grouped_after_the_polls(store: Store, copy: Path) -> tuple[dict[int, int], list[tuple[object, ...]]]:
    """The stories of the same stored entries, grouped from scratch after the polls, in a copy."""
    with sqlite3.connect(copy) as target:
        store.conn.backup(target)
    with Store(copy) as again:
        again.conn.execute("UPDATE entries SET story_id = NULL")
        again.conn.execute("DELETE FROM stories")
        assign_pending(again, StoryIndex(), datetime.now(UTC))
        return stories_of(again.conn)


def test_stories_grouped_while_polling_are_those_grouped_after(
    many_feeds: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(many_feeds)
    caplog.set_level(logging.DEBUG, logger="aggregator.workers")
    with Store(settings.database) as store:
        summary = update_feeds(settings, store)
        assert summary.new == EVENTS * REPORTS_PER_EVENT and summary.failed == 0
        assert "into stories while polling" in caplog.text, "the story worker did not run"
        members, stories = stories_of(store.conn)
        assert None not in members.values()
        assert max(row[-1] for row in stories) > 1, "no event was recognised across outlets"  # type: ignore[operator]
        assert (members, stories) == grouped_after_the_polls(store, tmp_path / "copy.db")


def refuse_to_start(database: str) -> None:
    """A story worker that cannot start (as with an unreadable database)."""
    raise RuntimeError(f"cannot open {database}")


def test_a_story_worker_that_fails_costs_nothing_but_time(
    many_feeds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(workers, "start_story_worker", refuse_to_start)  # the worker unpickles it from this module
    settings = load_settings(many_feeds)
    with Store(settings.database) as store:
        summary = update_feeds(settings, store)
        assert summary.new == EVENTS * REPORTS_PER_EVENT and summary.failed == 0
        assert "the story worker failed" in caplog.text
        members, stories = stories_of(store.conn)
        assert None not in members.values()
        assert (members, stories) == grouped_after_the_polls(store, tmp_path / "copy.db")
