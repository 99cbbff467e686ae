#!/usr/bin/env python3
"""Build a large archive database for the archive-size benchmarks (issue: performance, target 4).

Writes N entries (default 1,000,000) from F feeds (default 1,000) spread evenly over D days
(default 730, two years up to --end) into a fresh aggregator database, through the project's
own store (`Store.save_poll`), so the schema, indexes and tags are exactly what the product
writes. Text is generated from word lists; nothing is copied from anywhere.

Usage: gen_archive.py --out DIR [--entries 1000000] [--feeds 1000] [--days 730] [--seed 7]
DIR gets feeds.yaml (the F feeds, on an unreachable loopback port) and data/aggregator.db.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator.config import load_settings
from aggregator.models import EntryData, FeedConfig, PollOutcome, TaggedEntry
from aggregator.store import Store
from aggregator.tagging import Taxonomy

WORDS = tuple(
    [
        "bitcoin",
        "ether",
        "solana",
        "stablecoin",
        "exchange",
        "regulator",
        "fund",
        "token",
        "network",
        "upgrade",
        "miners",
        "wallet",
        "custody",
        "liquidity",
        "lending",
        "protocol",
        "validator",
        "bridge",
        "treasury",
        "rally",
        "slump",
        "outflows",
        "inflows",
        "filing",
        "approval",
        "lawsuit",
        "settlement",
        "launch",
        "partnership",
        "audit",
        "exploit",
        "governance",
        "staking",
        "yield",
        "derivatives",
        "futures",
    ]
)
NAMES = ("Binance", "Coinbase", "SEC", "Ethereum", "Bitcoin", "Solana", "Tether", "Kraken", "Uniswap", "BlackRock")


def headline(rng: random.Random) -> str:
    words = rng.sample(WORDS, 6)
    return f"{rng.choice(NAMES)} {' '.join(words[:3])} as {' '.join(words[3:])}".capitalize()


def summary(rng: random.Random) -> str:
    return "<p>" + " ".join(rng.choice(WORDS) for _ in range(45)) + ".</p>"


def write_config(out: Path, feeds: int) -> Path:
    lines = ["title: Archive Benchmark", "feeds:"]
    for index in range(feeds):
        lines += [f"  - name: feed-{index:04d}", f"    url: http://127.0.0.1:9/feeds/{index}.xml"]
    path = out / "feeds.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--end", default="2026-11-01")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    settings = load_settings(write_config(args.out, args.feeds))
    if settings.database.exists():
        sys.exit(f"{settings.database} exists already; remove it first")
    rng = random.Random(args.seed)
    taxonomy = Taxonomy.load()
    end = datetime.fromisoformat(args.end).replace(tzinfo=UTC)
    start = end - timedelta(days=args.days)
    per_feed = args.entries // args.feeds
    step = timedelta(days=args.days) / per_feed
    began = time.monotonic()
    with Store(settings.database) as store:
        store.sync_feeds([FeedConfig(name=f.name, url=f.url) for f in settings.feeds])
        for index, feed in enumerate(settings.feeds):
            entries = []
            for serial in range(per_feed):
                published = start + step * serial + timedelta(seconds=rng.randrange(3600))
                title = headline(rng)
                text = summary(rng)
                key = f"https://{feed.name}.example/{serial}"
                entry = EntryData(
                    key=key,
                    title=title,
                    link=key,
                    canonical_link=key,
                    author="Archive Desk",
                    summary=text,
                    published=published,
                    updated=published,
                    content_hash=hashlib.sha1(f"{key}{title}".encode()).hexdigest(),
                )
                entries.append(TaggedEntry(entry, taxonomy.tags_for(title, text, ())))
            store.save_poll(
                PollOutcome(feed=feed.name, status="ok", fetched_at=end, next_fetch=end, entries=tuple(entries))
            )
            if index % 100 == 99:
                print(f"{(index + 1) * per_feed:,} entries, {time.monotonic() - began:.0f} s", file=sys.stderr)
        total = store.count_entries()
    size = settings.database.stat().st_size
    per_entry = size / max(total, 1)
    print(f"wrote {total:,} entries to {settings.database}: {size / 1e6:.0f} MB, {per_entry:.0f} bytes/entry")
    return 0


if __name__ == "__main__":
    sys.exit(main())
