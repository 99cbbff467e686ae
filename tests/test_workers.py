"""The parse pool of an update parses the first few bodies in place and starts its workers only
for more: a usual update of an archive changes a few feeds, and parsing them costs less than
starting worker processes."""

from __future__ import annotations

import asyncio
import multiprocessing
from datetime import UTC, datetime, timedelta

import pytest

from aggregator import workers
from aggregator.workers import PARSE_IN_PLACE_FIRST, ParseArguments, ParsePool, parse_and_tag
from tests.feedgen import rss

NOW = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)


def body(number: int) -> ParseArguments:
    items = [(f"f{number}-{i}", f"Outlet {number} reports event {i}", NOW - timedelta(hours=i)) for i in range(3)]
    return (rss(f"Outlet {number}", items), f"https://outlet{number}.example/feed", {}, NOW, (), ())


@pytest.mark.skipif(workers.parallel_workers(100) == 0, reason="worker processes need two cores")
def test_the_first_bodies_are_parsed_in_place_and_the_rest_by_workers() -> None:
    async def parse_all(pool: ParsePool, count: int) -> list[object]:
        return [await pool.parse(body(number)) for number in range(count)]

    pool = ParsePool(2, ())
    try:
        first = asyncio.run(parse_all(pool, PARSE_IN_PLACE_FIRST))
        assert not multiprocessing.active_children(), "a worker started for a few bodies"
        assert first == [parse_and_tag(*body(number)) for number in range(PARSE_IN_PLACE_FIRST)]
        more = asyncio.run(parse_all(pool, PARSE_IN_PLACE_FIRST + 2))
        assert multiprocessing.active_children(), "no worker started for many bodies"
        assert more == [parse_and_tag(*body(number)) for number in range(PARSE_IN_PLACE_FIRST + 2)]
    finally:
        pool.shutdown()
