"""The whole pipeline through the real CLI: loopback feeds -> update -> SQLite -> render -> files."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from tests.conftest import DATA, VALIDATOR
from tests.e2e.cli import run_cli, write_config
from tests.feedserver import FeedServer

FEEDS = DATA / "feeds"
AWARD_TITLE = "Binance Receives Cyber Security Professional Award from Hong Kong Authorities"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def site(tmp_path: Path, feed_server: FeedServer) -> Path:
    feed_server.add("/cryptonews/feed/", (FEEDS / "cryptonews.xml").read_bytes())
    feed_server.add("/ledger.atom", (FEEDS / "theledger.atom").read_bytes(), content_type="application/atom+xml")
    feed_server.add("/page.html", (FEEDS / "notafeed.html").read_bytes(), content_type="text/html; charset=utf-8")
    feed_server.add("/broken", b"oops", status=500, content_type="text/plain")
    write_config(
        tmp_path,
        {
            "cryptonews": feed_server.url("/cryptonews/feed/"),
            "ledger": feed_server.url("/ledger.atom"),
            "webpage": feed_server.url("/page.html"),
            "broken": feed_server.url("/broken"),
            "missing": feed_server.url("/nothing-here.xml"),
            "refused": f"http://127.0.0.1:{closed_port()}/feed",
        },
    )
    return tmp_path


def db_rows(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_update_render_and_second_update(site: Path, feed_server: FeedServer) -> None:
    config = site / "feeds.yaml"
    first = run_cli("update", config=config)
    assert first.returncode == 0, first.stderr
    assert "6 feeds: 2 ok, 0 not modified, 4 failed; entries: 5 new, 0 updated" in first.stdout
    database = site / "data" / "aggregator.db"

    rows = db_rows(database, "SELECT e.id, e.title, e.author FROM entries e WHERE e.title = ?", AWARD_TITLE)
    assert len(rows) == 1
    (entry_id, _, author) = rows[0]
    assert author == "Hassan Shittu"
    tags = {
        row[0]
        for row in db_rows(
            database,
            "SELECT t.path FROM entry_tags et JOIN tags t ON t.id = et.tag_id WHERE et.entry_id = ?",
            entry_id,
        )
    }
    assert {"Blockchain", "Blockchain/Binance", "Security"} <= tags

    stored_html = " ".join(str(row[0]) for row in db_rows(database, "SELECT summary || content FROM entries"))
    assert "<script" not in stored_html and "onerror" not in stored_html
    assert 'href="https://cryptonews.example/news/related/"' in stored_html

    rendered = run_cli("render", config=config)
    assert rendered.returncode == 0, rendered.stderr
    public = site / "data" / "public"
    digest = (public / "digest" / "2024-03-05.html").read_text(encoding="utf-8")
    assert digest.count(AWARD_TITLE) == 1
    assert (public / "index.html").read_text(encoding="utf-8").count(AWARD_TITLE) == 1
    assert AWARD_TITLE in (public / "feed.atom").read_text(encoding="utf-8")
    assert AWARD_TITLE in (public / "tags" / "blockchain" / "binance.atom").read_text(encoding="utf-8")
    # The sources as OPML, each feed once, the one that has been polled with its site's address.
    sources = etree.fromstring((public / "opml.xml").read_bytes())
    outlines = {outline.get("xmlUrl"): outline for outline in sources.iter("outline") if outline.get("xmlUrl")}
    assert len(outlines) == 6
    assert any(outline.get("htmlUrl") for outline in outlines.values())

    second = run_cli("update", config=config)
    assert second.returncode == 0, second.stderr
    assert "2 not modified" in second.stdout and "entries: 0 new, 0 updated" in second.stdout
    conditional = [hit for hit in feed_server.hits("/cryptonews/feed/") if hit.status == 304]
    assert len(conditional) == 1
    assert db_rows(database, "SELECT count(*) FROM entries")[0][0] == 5


def test_failing_feeds_are_reported_in_words(site: Path) -> None:
    config = site / "feeds.yaml"
    assert run_cli("update", config=config).returncode == 0
    listing = run_cli("feeds", "--format", "json", config=config)
    assert listing.returncode == 0, listing.stderr
    feeds = {feed["name"]: feed for feed in json.loads(listing.stdout)}
    assert feeds["cryptonews"]["status"] == "ok" and feeds["cryptonews"]["entries"] == 3
    assert feeds["broken"]["status"] == "error" and "HTTP 500" in feeds["broken"]["last_error"]
    assert "HTTP 404" in feeds["missing"]["last_error"]
    assert "refused" in feeds["refused"]["last_error"]
    assert "not a feed" in feeds["webpage"]["last_error"] and "/feed/" in feeds["webpage"]["last_error"]
    table = run_cli("feeds", config=config).stdout
    assert "cryptonews" in table and "HTTP 500" in table


def test_update_one_named_feed(site: Path) -> None:
    result = run_cli("update", "--feed", "ledger", config=site / "feeds.yaml")
    assert result.returncode == 0, result.stderr
    assert "1 feeds: 1 ok" in result.stdout
    unknown = run_cli("update", "--feed", "nope", config=site / "feeds.yaml")
    assert unknown.returncode == 2 and "no feed named 'nope'" in unknown.stderr


def test_outputs_are_valid_feeds(site: Path) -> None:
    config = site / "feeds.yaml"
    run_cli("update", config=config)
    run_cli("render", config=config)
    outputs = [
        site / "data" / "public" / "feed.atom",
        *sorted((site / "data" / "public" / "tags").rglob("*.atom")),
    ]
    assert len(outputs) > 5
    for output in outputs:
        parsed = feedparser.parse(output.read_bytes())
        assert parsed.bozo == 0, (output, parsed.get("bozo_exception"))
        assert parsed.version == "atom10"
    if not VALIDATOR.exists():
        pytest.skip("../shared/tools/validate_feed is not present")
    checked = subprocess.run(
        [sys.executable, str(VALIDATOR), *map(str, outputs)], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_export_jsonl_and_csv(site: Path) -> None:
    config = site / "feeds.yaml"
    run_cli("update", config=config)
    lines = run_cli("export", config=config).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 5
    assert set(records[0]) == {
        "id",
        "feed",
        "title",
        "link",
        "author",
        "published",
        "updated",
        "summary",
        "tags",
        "story",
    }
    award = next(record for record in records if record["title"] == AWARD_TITLE)
    assert award["published"] == "2024-03-05T09:15:00Z"
    assert (
        award["link"] == "https://cryptonews.example/news/binance-cyber-security-award/?utm_source=rss&utm_medium=feed"
    )
    assert "Blockchain/Binance" in award["tags"]
    since = run_cli("export", "--since", "2024-03-05", config=config).stdout.splitlines()
    assert len(since) == 4
    csv_lines = run_cli("export", "--format", "csv", config=config).stdout.splitlines()
    assert csv_lines[0] == "id,feed,title,link,author,published,updated,summary,tags,story"


def test_check_prints_resolved_settings(site: Path) -> None:
    result = run_cli("check", config=site / "feeds.yaml")
    assert result.returncode == 0
    assert str(site / "data" / "aggregator.db") in result.stdout and "cryptonews" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "feeds:\n  - name: a\n    url: https://a.example/\n    colour: red\n",
            "feeds[0].colour: unknown key 'colour'",
        ),
        (
            "feeds:\n  - name: a\n    url: https://a.example/\n  - name: a\n    url: https://b.example/\n",
            "feeds[1].name: duplicate feed name 'a'",
        ),
        (
            "feeds:\n  - name: a\n    url: ftp://a.example/\n",
            "feeds[0].url: 'ftp://a.example/' is not an http(s) URL",
        ),
        (
            "feeds:\n  - name: a\n    url: https://a.example/\n    interval: often\n",
            "feeds[0].interval: 'often' is not a duration",
        ),
    ],
)
def test_bad_config_exits_2_before_anything_runs(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "feeds.yaml"
    config.write_text(text, encoding="utf-8")
    for command in ("update", "render", "check"):
        result = run_cli(command, config=config)
        assert result.returncode == 2
        assert str(config) in result.stderr and expected in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_cli("update", config=tmp_path / "absent.yaml")
    assert result.returncode == 2 and "absent.yaml: file not found" in result.stderr


def test_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("update", "render", "feeds", "export", "check"):
        assert command in result.stdout
