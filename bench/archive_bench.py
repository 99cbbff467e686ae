#!/usr/bin/env python3
"""Measure the project on a large archive (made by gen_archive.py): render, export, warm update, size.

Usage: archive_bench.py DIR [--port PORT]
Each measurement runs the real CLI as a subprocess under /usr/bin/time -v (wall seconds, peak RSS).
The warm update polls the archive's feeds against a loopback server that answers 304 to every
request, on the archive database and on an empty one, so the two times can be compared.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path)
    args = parser.parse_args()
    aggregator = shutil.which("aggregator") or str(Path(sys.executable).parent / "aggregator")
    directory = args.dir.resolve()
    database = directory / "data" / "aggregator.db"
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

    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
