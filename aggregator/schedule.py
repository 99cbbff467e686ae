"""When to poll a feed next: a pure policy over the interval, failures and the feed's hints.

The configured interval is the floor: nothing here ever polls sooner. Failures back
off exponentially (capped at a day), Retry-After defers, and the feed's own hints
(RSS ttl, sy:updatePeriod, Cache-Control max-age) may stretch the delay within
sane bounds, while skipHours/skipDays move it out of the hours the publisher asked
us to leave alone. Knows nothing of HTTP clients, SQLite or APScheduler.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aggregator.models import FeedHints

MAX_BACKOFF = timedelta(hours=24)
# A publisher's hint may slow us down, but not beyond this: news must not wait a day.
MAX_HINT = timedelta(hours=6)
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-maxage|max-age)\s*=\s*\"?(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class NextPoll:
    """The next poll time and the reason for it, as `aggregator feeds` shows it."""

    at: datetime
    reason: str


def next_poll(
    interval_seconds: float,
    now: datetime,
    error_count: int = 0,
    retry_after_seconds: float | None = None,
    hints: FeedHints | None = None,
) -> NextPoll:
    """The time of the next poll of a feed that was just polled at `now`."""
    interval = timedelta(seconds=interval_seconds)
    delay, reason = interval, "interval"
    if error_count > 0:
        delay = min(interval * (2 ** min(error_count - 1, 30)), max(MAX_BACKOFF, interval))
        if delay > interval:
            reason = f"backoff after {error_count} failures"
    elif hints is not None:
        hinted, why = _hinted_delay(hints)
        if hinted is not None and hinted > delay:
            delay, reason = hinted, why
    if retry_after_seconds is not None and timedelta(seconds=retry_after_seconds) >= delay:
        delay, reason = timedelta(seconds=retry_after_seconds), "Retry-After"
    at = now + delay
    if hints is not None and (hints.skip_hours or hints.skip_days):
        moved = _skip(at, hints)
        if moved != at:
            at, reason = moved, reason + ", skipHours/skipDays"
    return NextPoll(at, reason)


def _hinted_delay(hints: FeedHints) -> tuple[timedelta | None, str]:
    candidates = []
    if hints.ttl_minutes:
        candidates.append((timedelta(minutes=hints.ttl_minutes), f"feed hint (ttl {hints.ttl_minutes} min)"))
    if hints.update_period_seconds:
        candidates.append((timedelta(seconds=hints.update_period_seconds), "feed hint (sy:updatePeriod)"))
    if hints.max_age_seconds:
        candidates.append((timedelta(seconds=hints.max_age_seconds), "Cache-Control max-age"))
    if not candidates:
        return None, ""
    delay, reason = max(candidates, key=lambda candidate: candidate[0])
    return min(delay, MAX_HINT), reason


def _skip(at: datetime, hints: FeedHints) -> datetime:
    """The first whole hour at or after `at` that the feed does not ask us to skip (UTC)."""
    skip_days = {day.lower() for day in hints.skip_days}
    if len(hints.skip_hours) >= 24 or skip_days >= set(_DAY_NAMES):
        return at  # a feed that skips everything gets no say
    moment = at.astimezone(UTC)
    for _ in range(24 * 8):
        if moment.hour not in hints.skip_hours and _DAY_NAMES[moment.weekday()] not in skip_days:
            return moment
        moment = (moment + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    return at


def max_age_from(headers: Mapping[str, str]) -> int | None:
    """Seconds of Cache-Control max-age (or s-maxage), if the response gave one."""
    cache_control = headers.get("cache-control", "")
    if "no-cache" in cache_control.lower() or "no-store" in cache_control.lower():
        return None
    match = _MAX_AGE.search(cache_control)
    return int(match.group(1)) if match else None
