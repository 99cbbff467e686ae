"""Day pages shared with helper processes: the same files as one process writes, whatever a helper does.

A real SQLite archive (a month of news from three outlets, grouped into stories, a few entries
still in none) is rendered once by this process alone and once with helpers; the two output
trees must be the same to the byte. `Share` itself is checked with workers that fail in the
helpers: the parent then does their jobs, and says so.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aggregator.models import EntryData, FeedConfig, PollOutcome, SiteConfig, TaggedEntry
from aggregator.render import SHARED_DAY_PAGES, render_all
from aggregator.render_share import Share
from aggregator.store import Store

START = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)
DAYS = SHARED_DAY_PAGES + 6
FEEDS = ("alpha", "beta", "gamma")
TOPICS = (("Security",), ("Regulation", "Regulation/SEC"), ("Blockchain", "Blockchain/Bitcoin"), ())


def save_day(store: Store, day: int) -> list[int]:
    """Two reports a day from each outlet, tagged by turns; the ids of the new entries, by outlet."""
    ids: list[int] = []
    for number, feed in enumerate(FEEDS):
        reports = tuple(
            TaggedEntry(
                EntryData(
                    key=f"{feed}-{day}-{kind}",
                    title=f"{feed.title()} on day {day}: report {kind} & <more>",
                    link=f"https://{feed}.example/{day}/{kind}",
                    summary=f"<p>What {feed} wrote on day {day}, report {kind}.</p>",
                    text=f"What {feed} wrote on day {day}, report {kind}.",
                    published=START + timedelta(days=day, hours=5 * kind + number),
                    content_hash=f"{feed}-{day}-{kind}",
                ),
                frozenset(TOPICS[(day + number + kind) % len(TOPICS)]),
            )
            for kind in range(2)
        )
        polled = START + timedelta(days=day, hours=12)
        outcome = PollOutcome(
            feed=feed, status="ok", fetched_at=polled, next_fetch=polled + timedelta(hours=1), entries=reports
        )
        ids.extend(store.save_poll(outcome).new_ids)
    return ids


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A month of news: each day one story of three outlets, one of two, the rest alone; the last
    day's entries are in no story yet."""
    path = tmp_path / "data" / "aggregator.db"
    with Store(path) as store:
        store.sync_feeds([FeedConfig(name=feed, url=f"https://{feed}.example/feed") for feed in FEEDS])
        for day in range(DAYS):
            alpha_first, alpha_second, beta_first, beta_second, gamma_first, gamma_second = save_day(store, day)
            if day == DAYS - 1:
                continue
            groups = [(alpha_first, beta_first), (alpha_first, gamma_first), (beta_second, gamma_second)]
            groups += [(entry_id, entry_id) for entry_id in (alpha_first, alpha_second, beta_second)]
            store.save_story_assignments(groups, START + timedelta(days=day, hours=13))
    return path


def site_in(directory: Path) -> SiteConfig:
    return SiteConfig(title="Shared & fast", site_url="https://news.example/", output_dir=str(directory))


def tree(directory: Path) -> dict[str, bytes]:
    """Every output file by its path, the render state without its fingerprint (it names the directory)."""
    files = {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}
    state = json.loads(files.pop(".render-state.json"))
    state.pop("fingerprint")
    files[".render-state.json"] = json.dumps(state, sort_keys=True).encode()
    return files


def test_day_pages_written_with_helpers_are_the_files_one_process_writes(
    archive: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = START + timedelta(days=DAYS - 1, hours=20)
    with Store(archive, readonly=True) as store:
        alone = render_all(store, site_in(tmp_path / "alone"), now, helpers=0)
        shared = render_all(store, site_in(tmp_path / "shared"), now, helpers=2)
    assert alone == shared
    assert alone.days == DAYS
    assert tree(tmp_path / "alone") == tree(tmp_path / "shared")
    assert len(list((tmp_path / "shared" / "digest").glob("*.html"))) == DAYS
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def test_a_full_render_with_helpers_over_an_old_output_rewrites_only_what_differs(
    archive: Path, tmp_path: Path
) -> None:
    site = site_in(tmp_path / "public")
    now = START + timedelta(days=DAYS - 1, hours=20)
    with Store(archive, readonly=True) as store:
        render_all(store, site, now, helpers=2)
        stale = tmp_path / "public" / "digest" / f"{(START + timedelta(days=3)).date().isoformat()}.html"
        stale.write_bytes(b"an old page")
        again = render_all(store, site, now, full=True, helpers=2)
    assert (again.days, again.files_written) == (DAYS, 1)  # that page alone
    assert stale.read_bytes().startswith(b"<!doctype html>")


def test_the_archive_lists_only_days_with_entries_in_a_zone_off_the_hour(archive: Path) -> None:
    """5:45 ahead of UTC, an entry at 23:50 is in an hour that ends the next day: that day has no news."""
    late = START.replace(hour=18, minute=5) + timedelta(days=DAYS - 1)
    zone = ZoneInfo("Asia/Kathmandu")
    with Store(archive) as store:
        report = TaggedEntry(EntryData(key="late", title="Late news", published=late, content_hash="late"))
        store.save_poll(PollOutcome(feed="gamma", status="ok", fetched_at=late, next_fetch=late, entries=(report,)))
        days = store.entry_days(zone)
        expected = sorted({entry.published.astimezone(zone).date() for entry in store.iter_entries()})
    assert days == expected
    assert days[-1] == late.astimezone(zone).date() == date(2024, 5, DAYS)


# ------------------------------------------------------------------ Share on its own


class Doubler:
    """A worker that doubles numbers and says which process did; in a helper it leaves a mark per job."""

    def __init__(self, marks: Path | None = None) -> None:
        self.marks = marks

    def __call__(self, job: int) -> tuple[int, int]:
        if self.marks is not None:
            (self.marks / str(job)).touch()
        return job * 2, os.getpid()

    def close(self) -> None:
        pass


class AfterAHelper(Doubler):
    """This process's worker: it starts once a helper has done a job, so that helpers surely take some."""

    def __call__(self, job: int) -> tuple[int, int]:
        assert self.marks is not None
        deadline = time.monotonic() + 60
        while not any(self.marks.iterdir()):
            assert time.monotonic() < deadline, "no helper did a job within a minute"
            time.sleep(0.01)
        return super().__call__(job)


class Broken:
    """A worker that cannot do its job in a helper: it raises, or its process ends at once (after its mark)."""

    def __init__(self, how: str, marks: Path) -> None:
        self.how = how
        self.marks = marks

    def __call__(self, job: int) -> tuple[int, int]:
        (self.marks / str(job)).touch()
        if self.how == "exit":
            os._exit(3)
        raise RuntimeError(f"job {job} failed")

    def close(self) -> None:
        pass


def test_share_without_helpers_does_every_job_here_in_order() -> None:
    share: Share[int, tuple[int, int]] = Share.start(list(range(5)), None, helpers=3)
    results = share.run(Doubler())
    share.stop()
    assert results == [(number * 2, os.getpid()) for number in range(5)]


def test_helpers_take_jobs_and_the_results_come_back_in_order(tmp_path: Path) -> None:
    jobs = list(range(300))
    share: Share[int, tuple[int, int]] = Share.start(jobs, functools.partial(Doubler, tmp_path), helpers=2)
    try:
        results = share.run(AfterAHelper(tmp_path))
    finally:
        share.stop()
    assert [doubled for doubled, _pid in results] == [number * 2 for number in jobs]
    assert {pid for _doubled, pid in results} - {os.getpid()}, "helpers did some of the jobs"


@pytest.mark.parametrize(("how", "said"), [("raise", "RuntimeError: job"), ("exit", "exit code 3")])
def test_what_a_failing_helper_leaves_is_done_here(
    how: str, said: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = list(range(30))
    share: Share[int, tuple[int, int]] = Share.start(jobs, functools.partial(Broken, how, tmp_path), helpers=2)
    try:
        results = share.run(AfterAHelper(tmp_path))
    finally:
        share.stop()
    assert results == [(number * 2, os.getpid()) for number in jobs]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings, "a failed helper is reported"
    assert all("render helper failed" in warning and said in warning for warning in warnings), warnings
