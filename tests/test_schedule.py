"""The polling policy: the interval is a floor, failures back off, Retry-After and feed hints stretch it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from aggregator.models import FeedHints
from aggregator.schedule import MAX_BACKOFF, MAX_HINT, max_age_from, next_poll
from aggregator.scheduler import digest_day_due

NOW = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)  # a Tuesday


def test_plain_interval() -> None:
    upcoming = next_poll(600, NOW)
    assert (upcoming.at, upcoming.reason) == (NOW + timedelta(minutes=10), "interval")


def test_failures_double_the_delay_up_to_a_day() -> None:
    delays = [next_poll(600, NOW, error_count=count).at - NOW for count in range(1, 12)]
    assert delays[:4] == [timedelta(minutes=10 * factor) for factor in (1, 2, 4, 8)]
    assert max(delays) == MAX_BACKOFF
    assert next_poll(600, NOW, error_count=3).reason == "backoff after 3 failures"


def test_backoff_never_goes_below_a_long_interval() -> None:
    assert next_poll(2 * 86400, NOW, error_count=5).at == NOW + timedelta(days=2)


def test_retry_after_defers() -> None:
    upcoming = next_poll(600, NOW, error_count=1, retry_after_seconds=3600)
    assert (upcoming.at, upcoming.reason) == (NOW + timedelta(hours=1), "Retry-After")
    assert next_poll(600, NOW, error_count=1, retry_after_seconds=5).at == NOW + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("hints", "delay", "reason"),
    [
        (FeedHints(ttl_minutes=60), timedelta(hours=1), "feed hint (ttl 60 min)"),
        (FeedHints(ttl_minutes=1), timedelta(minutes=10), "interval"),
        (FeedHints(update_period_seconds=7200), timedelta(hours=2), "feed hint (sy:updatePeriod)"),
        (FeedHints(max_age_seconds=1800), timedelta(minutes=30), "Cache-Control max-age"),
        (FeedHints(ttl_minutes=60 * 24 * 7), MAX_HINT, "feed hint (ttl 10080 min)"),
    ],
)
def test_feed_hints_stretch_within_bounds(hints: FeedHints, delay: timedelta, reason: str) -> None:
    upcoming = next_poll(600, NOW, hints=hints)
    assert (upcoming.at - NOW, upcoming.reason) == (delay, reason)


def test_skip_hours_and_days_move_the_poll() -> None:
    upcoming = next_poll(600, NOW, hints=FeedHints(skip_hours=frozenset({12, 13})))
    assert upcoming.at == datetime(2024, 3, 5, 14, 0, tzinfo=UTC)
    assert upcoming.reason.endswith("skipHours/skipDays")
    tuesday_off = next_poll(600, NOW, hints=FeedHints(skip_days=frozenset({"tuesday"})))
    assert tuesday_off.at == datetime(2024, 3, 6, 0, 0, tzinfo=UTC)
    everything = FeedHints(skip_hours=frozenset(range(24)))
    assert next_poll(600, NOW, hints=everything).at == NOW + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("max-age=300", 300), ("public, s-maxage=60", 60), ("no-cache, max-age=300", None), ("", None)],
)
def test_max_age(header: str, seconds: int | None) -> None:
    assert max_age_from({"cache-control": header}) == seconds


def test_digest_day_due() -> None:
    morning = datetime(2024, 3, 5, 6, 0, tzinfo=UTC)
    assert digest_day_due(morning, "UTC", "07:00", None) == date(2024, 3, 4)
    assert digest_day_due(morning, "UTC", "07:00", date(2024, 3, 4)) is None
    assert digest_day_due(morning + timedelta(hours=2), "UTC", "07:00", date(2024, 3, 4)) == date(2024, 3, 5)
    assert digest_day_due(morning, "Asia/Tokyo", "07:00", date(2024, 3, 4)) == date(2024, 3, 5)
