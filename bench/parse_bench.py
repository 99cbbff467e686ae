#!/usr/bin/env python3
"""Parsing speed on one core, in MB/s of feed XML (issue 7, target 3).

Runs what a parse worker of `aggregator update` runs on each fetched body,
`workers.parse_and_tag` (parse, normalize, sanitize, hash, tag), over every feed of a corpus
round made by ../shared/bench/gen_corpus.py, with the response headers the benchmark server
sends. The files are read into memory first, and the parser is loaded and the taxonomy built
before the clock starts (a worker does that once, before its first body; the cost is printed
on a line of its own).

On a shared machine the run-to-run spread is large: `--repeat N` times the whole corpus N
times and reports the fastest, in CPU time (what one core spent, the measure of the target)
and in wall time. Pin it to one core (`taskset -c 0`).
`--profile FILE` writes a cProfile of one more pass (for `python -m pstats FILE`).

Usage: taskset -c 0 bench/parse_bench.py CORPUS_ROUND_DIR [--repeat 5] [--limit N] [--profile FILE]
       (make a corpus with: python ../shared/bench/gen_corpus.py --out /tmp/corpus --n 200;
       its round is then /tmp/corpus/round-0)
"""

from __future__ import annotations

import argparse
import cProfile
import time
from datetime import UTC, datetime
from pathlib import Path

from aggregator.workers import parse_and_tag, warm_up

# What ../shared/bench/serve.py sends for each format.
CONTENT_TYPES = {"rss": "application/rss+xml; charset=utf-8", "atom": "application/atom+xml; charset=utf-8"}
FORMAT_SNIFF_BYTES = 512

Document = tuple[bytes, str, dict[str, str]]


def load_documents(round_dir: Path, limit: int | None) -> list[Document]:
    """Each feed's body, the URL it is served from and the headers it is served with."""
    paths = sorted(round_dir.glob("*.xml"), key=lambda path: int(path.stem))[:limit]
    if not paths:
        raise SystemExit(f"no *.xml feeds in {round_dir}")
    documents: list[Document] = []
    for path in paths:
        body = path.read_bytes()
        kind = "atom" if b"<feed" in body[:FORMAT_SNIFF_BYTES] else "rss"
        url = f"http://127.0.0.1:8000/feeds/{path.name}"
        documents.append((body, url, {"content-type": CONTENT_TYPES[kind]}))
    return documents


def parse_all(documents: list[Document], now: datetime) -> int:
    """Parse and tag every document as a worker would; returns the number of entries."""
    entries = 0
    for body, url, headers in documents:
        parsed, _tags = parse_and_tag(body, url, headers, now, (), ())
        entries += len(parsed.entries)
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("round_dir", type=Path, help="a corpus round directory of *.xml feeds")
    parser.add_argument("--repeat", type=int, default=5, help="passes over the corpus; the fastest counts")
    parser.add_argument("--limit", type=int, default=None, help="only the first N feeds")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of one more pass here")
    args = parser.parse_args()
    documents = load_documents(args.round_dir, args.limit)
    megabytes = sum(len(body) for body, _, _ in documents) / 1e6
    now = datetime.now(UTC)

    started = time.perf_counter()
    warm_up(())
    print(f"start-up (parser modules and taxonomy, once per worker): {time.perf_counter() - started:.3f} s")

    repeat = max(1, args.repeat)
    best_wall = best_cpu = float("inf")
    entries = 0
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        entries = parse_all(documents, now)
        best_cpu = min(best_cpu, time.process_time() - started_cpu)
        best_wall = min(best_wall, time.perf_counter() - started)
    print(f"{len(documents)} feeds, {megabytes:.1f} MB, {entries} entries, best of {repeat}:")
    print(
        f"  CPU  {best_cpu:.2f} s, {megabytes / best_cpu:.1f} MB/s, {best_cpu / len(documents) * 1e3:.1f} ms per feed"
    )
    print(f"  wall {best_wall:.2f} s, {megabytes / best_wall:.1f} MB/s")
    if args.profile is not None:
        cProfile.runctx("parse_all(documents, now)", globals(), {"documents": documents, "now": now}, str(args.profile))
        print(f"profile written to {args.profile}")


if __name__ == "__main__":
    main()
