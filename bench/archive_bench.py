#!/usr/bin/env python3
"""Measure the project on a large archive (made by gen_archive.py): render, export, warm update, size, search.

Usage: archive_bench.py DIR [--only search] [--passes N]
Each measurement but search runs the real CLI as a subprocess under /usr/bin/time -v (wall
seconds, peak RSS). The warm update polls the archive's feeds against a loopback server that
answers 304 to every request, on the archive database and on an empty one, so the two times can
be compared. Search times `Store.search` (limit 20) in this process, on the database opened
read-only as `aggregator search` opens it, for 100 queries sampled from the archive's own titles
(see search_queries); it needs only DIR/data/aggregator.db, so `--only search` works on a copy
of an archive's database. To compare with another version of the package, run this script with
PYTHONPATH pointing at that version's source.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# The search queries (the same on every run of one archive): SEARCH_WORD_QUERIES of one to three
# words drawn from the titles of every 997th entry, then the first SEARCH_TAGGED of them again with
# each of SEARCH_TAGS as a filter: 100 in all.
SEARCH_SEED = 7
SEARCH_WORD_QUERIES = 60
SEARCH_TAGGED = 20
SEARCH_TAGS = ("Blockchain/Bitcoin", "Markets")
SEARCH_SLOWEST = 5


def timed(*command: str, cwd: Path) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MB, stdout) of one command."""
    started = time.monotonic()
    result = subprocess.run(["/usr/bin/time", "-v", *command], cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    if result.returncode != 0:
        print(result.stderr[-2000:], file=sys.stderr)
    return wall, int(match.group(1)) // 1024 if match else -1, result.stdout


class NotModified(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(304)
        self.send_header("ETag", '"same"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def search_queries(database: Path) -> list[tuple[str, str | None]]:
    """(query, tag filter) pairs: words of the archive's titles, picked by a seeded generator."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        titles = [row[0] for row in connection.execute("SELECT title FROM entries WHERE id % 997 = 0 LIMIT 300")]
    finally:
        connection.close()
    words = [word for title in titles for word in re.findall(r"[A-Za-z]{4,}", title)]
    pick = random.Random(SEARCH_SEED)
    plain = [" ".join(pick.sample(words, pick.choice([1, 1, 2, 2, 3]))) for _ in range(SEARCH_WORD_QUERIES)]
    tagged = [(query, tag) for tag in SEARCH_TAGS for query in plain[:SEARCH_TAGGED]]
    return [(query, None) for query in plain] + tagged


def search_rows(database: Path, passes: int) -> list[tuple[str, str]]:
    """p50, p95 and max of `Store.search` over the sampled queries, once per pass, and the slowest queries."""
    from aggregator.store import Store  # the checkout (or PYTHONPATH) being measured

    queries = search_queries(database)
    rows: list[tuple[str, str]] = []
    slowest: list[tuple[float, str]] = []  # (seconds, query) of every pass
    with Store(database, readonly=True) as store:
        for number in range(1, passes + 1):
            times: list[float] = []
            for query, tag in queries:
                started = time.perf_counter()
                store.search(query, tag=tag, limit=20)
                elapsed = time.perf_counter() - started
                times.append(elapsed)
                slowest.append((elapsed, query if tag is None else f"{query} (tag {tag})"))
            times.sort()
            p95 = times[max(0, int(len(times) * 0.95) - 1)]
            rows.append(
                (
                    f"search, pass {number} ({len(times)} queries, Store.search, limit 20)",
                    f"p50 {statistics.median(times) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
                    f"max {times[-1] * 1000:.1f} ms",
                )
            )
    worst = {query: elapsed for elapsed, query in sorted(slowest)}  # each query's slowest pass
    ranked = sorted(worst.items(), key=lambda item: item[1], reverse=True)[:SEARCH_SLOWEST]
    listed = ", ".join(f"{query!r} {elapsed * 1000:.0f} ms" for query, elapsed in ranked)
    rows.append(("search, slowest", listed))
    return rows


def print_table(rows: list[tuple[str, str]]) -> None:
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--only", choices=["search"], help="run only this measurement")
    parser.add_argument("--passes", type=int, default=3, help="times to run the search queries (default 3)")
    args = parser.parse_args()
    aggregator = shutil.which("aggregator") or str(Path(sys.executable).parent / "aggregator")
    directory = args.dir.resolve()
    database = directory / "data" / "aggregator.db"
    if args.only == "search":
        print_table(search_rows(database, args.passes))
        return 0
    entries = int(
        subprocess.run(
            ["sqlite3", str(database), "select count(*) from entries"], capture_output=True, text=True
        ).stdout.strip()
        or 0
    )
    rows: list[tuple[str, str]] = [("entries", f"{entries:,}")]
    size = database.stat().st_size
    rows.append(("database size", f"{size / 1e6:.0f} MB ({size / max(entries, 1):.0f} bytes per entry)"))

    wall, rss, _ = timed(aggregator, "--config", "feeds.yaml", "render", cwd=directory)
    rows.append(("render (every output)", f"{wall:.2f} s, peak RSS {rss} MB"))
    wall, rss, _ = timed(aggregator, "--config", "feeds.yaml", "render", cwd=directory)
    rows.append(("render again (nothing changed)", f"{wall:.2f} s, peak RSS {rss} MB"))
    started = time.monotonic()
    with subprocess.Popen(
        [aggregator, "--config", "feeds.yaml", "export"], cwd=directory, stdout=subprocess.PIPE
    ) as export:
        assert export.stdout is not None
        lines = sum(1 for _ in export.stdout)
    rows.append(("export jsonl (all)", f"{time.monotonic() - started:.2f} s for {lines:,} records"))
    wall, rss, _ = timed("sh", "-c", f"{aggregator} --config feeds.yaml export > /dev/null", cwd=directory)
    rows.append(("export peak RSS", f"{rss} MB"))

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotModified)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    for label, target in (("warm update, archive db", directory), ("warm update, empty db", directory / "empty")):
        target.mkdir(exist_ok=True)
        config = (directory / "feeds.yaml").read_text().replace("127.0.0.1:9/", f"127.0.0.1:{port}/")
        (target / "warm.yaml").write_text(config)
        if target != directory:
            (target / "warm.yaml").write_text(config.replace("title:", "database: data/aggregator.db\ntitle:"))
            (target / "data").mkdir(exist_ok=True)
        wall, rss, out = timed(aggregator, "--config", "warm.yaml", "update", cwd=target)
        rows.append((label, f"{wall:.2f} s, peak RSS {rss} MB ({out.strip()})"))
    server.shutdown()

    rows.extend(search_rows(database, args.passes))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
