#!/usr/bin/env python3
"""Time tagging and story grouping on N entries of the shared benchmark corpus (issue 6's measure).

Parses feeds of a corpus made by ../shared/bench/gen_corpus.py until it has N entries, then times,
on one core: tagging every entry (Taxonomy.tags_for on title, summary and categories) and grouping
them into stories (stories.cluster, in publication order, as polling would). Prints one line each.

On a shared machine the run-to-run spread is large: `--repeat N` times each step N times and
prints the fastest.

Usage: bench/stories_bench.py CORPUS_DIR [--entries 10000] [--repeat 1]
       (make the corpus with: python ../shared/bench/gen_corpus.py --out /tmp/corpus --n 400)
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from aggregator.models import EntryData, StoryItem
from aggregator.parse import parse_feed
from aggregator.stories import cluster
from aggregator.tagging import Taxonomy


def load_entries(corpus: Path, wanted: int) -> list[tuple[str, EntryData]]:
    files = sorted((corpus / "round-0").glob("*.xml"), key=lambda path: int(path.stem))
    entries: list[tuple[str, EntryData]] = []
    for path in files:
        parsed = parse_feed(path.read_bytes(), f"https://feed{path.stem}.example/", {}, datetime.now(UTC))
        entries.extend((f"feed{path.stem}", entry) for entry in parsed.entries)
        if len(entries) >= wanted:
            break
    return entries[:wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=1, help="time each step this many times, keep the fastest")
    args = parser.parse_args()
    entries = load_entries(args.corpus, args.entries)
    taxonomy = Taxonomy.load()

    tagged = grouped = float("inf")
    for _ in range(max(1, args.repeat)):
        started = time.perf_counter()
        tags = [taxonomy.tags_for(entry.title, entry.summary, entry.categories, ()) for _, entry in entries]
        tagged = min(tagged, time.perf_counter() - started)

    items = sorted(
        (
            StoryItem(number, feed, entry.title, entry.text, entry_tags, entry.published or datetime.now(UTC))
            for number, ((feed, entry), entry_tags) in enumerate(zip(entries, tags, strict=True), start=1)
        ),
        key=lambda item: (item.published, item.id),
    )
    for _ in range(max(1, args.repeat)):
        started = time.perf_counter()
        stories = cluster(items)
        grouped = min(grouped, time.perf_counter() - started)

    sizes = Counter(Counter(stories.values()).values())
    multi = sum(count for size, count in sizes.items() if size > 1)
    print(f"{len(entries)} entries: tagging {tagged:.2f} s ({tagged / len(entries) * 1e6:.0f} µs each)")
    print(
        f"grouping {grouped:.2f} s ({grouped / len(entries) * 1e6:.0f} µs each): "
        f"{len(set(stories.values()))} stories, {multi} of them with 2+ entries, largest {max(sizes)}"
    )


if __name__ == "__main__":
    main()
