"""Every real outlet document of ../shared/corpus/real, served over loopback and ingested by the CLI."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import feedparser

from tests.e2e.cli import run_cli, write_config
from tests.feedserver import FeedServer


def feed_name(path: Path, corpus: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(path.relative_to(corpus).with_suffix("")))


def distinct_keys(body: bytes) -> int:
    """Distinct entry keys as feedparser sees them: guid/id, else link, else title + summary."""
    parsed = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
    keys = set()
    for entry in parsed.entries:
        key = (entry.get("id") or "").strip() or (entry.get("link") or "").strip()
        if not key:
            key = hashlib.sha1((entry.get("title", "") + entry.get("summary", "")).encode()).hexdigest()
        keys.add(key)
    return len(keys)


def test_whole_corpus_is_ingested_once(tmp_path: Path, corpus_dir: Path, feed_server: FeedServer) -> None:
    documents = sorted(path for path in corpus_dir.rglob("*") if path.is_file() and path.suffix != ".md")
    assert documents
    feeds = {}
    expected = {}
    for path in documents:
        name = feed_name(path, corpus_dir)
        body = path.read_bytes()
        feeds[name] = feed_server.add(f"/{name}", body, content_type="application/xml")
        expected[name] = distinct_keys(body)
    config = write_config(tmp_path, feeds)

    first = run_cli("update", config=config)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    conn = sqlite3.connect(tmp_path / "data" / "aggregator.db")
    stored = dict(
        conn.execute("SELECT f.name, count(e.id) FROM feeds f LEFT JOIN entries e ON e.feed_id = f.id GROUP BY f.id")
    )
    mismatched = {name: (stored.get(name), count) for name, count in expected.items() if stored.get(name) != count}
    assert not mismatched, f"stored vs feedparser's distinct keys: {mismatched}"
    total = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    conn.close()

    second = run_cli("update", config=config)
    assert second.returncode == 0, second.stderr
    assert "entries: 0 new, 0 updated" in second.stdout
    conn = sqlite3.connect(tmp_path / "data" / "aggregator.db")
    assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == total
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    rendered = run_cli("render", config=config)
    assert rendered.returncode == 0, rendered.stderr
    assert (tmp_path / "data" / "public" / "feed.atom").exists()
