"""`search`, `tags`, `export --tag` and serve's /search through the real CLI, on a database
filled by a real `aggregator update` from two loopback feeds written in the tests' own words."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from tests.e2e.cli import CLI_TIMEOUT_SECONDS, run_cli, write_config
from tests.feedserver import FeedServer

# parse drops whole tags from titles; what reaches the store is text with stray markup characters.
HOSTILE_TITLE = 'Miners see difficulty climb as fees drop <$1 & "pools" cheer <script'
# (guid, title, summary, published, categories)
Item = tuple[str, str, str, datetime, list[str]]
LEDGER: list[Item] = [
    ("ledger-office", "Binance opens a regional office in Dubai", "The exchange plans to hire local staff.",
     datetime(2024, 5, 2, 8, 0, tzinfo=UTC), ["Exchanges"]),
    ("ledger-reserves", "Stablecoin supply reaches a new high",
     "Analysts said Binance's reserves grew while Crypto.com trimmed its holdings.",
     datetime(2024, 5, 1, 10, 0, tzinfo=UTC), ["Markets"]),
    ("ledger-staking", "Crypto.com adds staking for Solana", "Users can stake SOL from the app from today.",
     datetime(2024, 4, 28, 9, 30, tzinfo=UTC), []),
    ("ledger-hostile", HOSTILE_TITLE, "Difficulty rose for the third adjustment in a row.",
     datetime(2024, 4, 30, 7, 0, tzinfo=UTC), []),
]  # fmt: skip
WIRE: list[Item] = [
    ("wire-gulf", "Binance opens a regional office in Dubai, its first in the Gulf",
     "The largest exchange is growing in the region with a new office.",
     datetime(2024, 5, 2, 9, 0, tzinfo=UTC), []),
    ("wire-halving", "Bitcoin miners brace for the halving", "Revenue per block is set to drop by half.",
     datetime(2024, 4, 29, 12, 0, tzinfo=UTC), []),
    ("wire-wallet", "A hardware wallet maker ships new firmware", "The update fixes a pairing bug.",
     datetime(2024, 4, 27, 12, 0, tzinfo=UTC), []),
    ("wire-layer2", "A layer-2 network lowers its fees", "Transactions got cheaper after an upgrade.",
     datetime(2024, 4, 26, 12, 0, tzinfo=UTC), []),
]  # fmt: skip
EXPECTED_KEYS = {"id", "feed", "title", "link", "published", "tags", "story", "snippet", "rank"}


def rss(title: str, items: list[Item]) -> bytes:
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<rss version="2.0"><channel><title>{escape(title)}</title><link>https://{title.lower()}.example/</link>',
        f"<description>{escape(title)} fixture</description>",
    ]
    for guid, headline, summary, published, categories in items:
        parts.append(
            f'<item><title>{escape(headline)}</title><guid isPermaLink="false">{guid}</guid>'
            f"<link>https://{title.lower()}.example/{guid}</link>"
            f"<pubDate>{format_datetime(published, usegmt=True)}</pubDate>"
            + "".join(f"<category>{escape(category)}</category>" for category in categories)
            + f"<description>{escape(summary)}</description></item>"
        )
    parts.append("</channel></rss>")
    return "\n".join(parts).encode("utf-8")


@pytest.fixture
def config(tmp_path: Path, feed_server: FeedServer) -> Path:
    path = write_config(
        tmp_path,
        {
            "ledger": feed_server.add("/ledger.xml", rss("Ledger", LEDGER)),
            "wire": feed_server.add("/wire.xml", rss("Wire", WIRE)),
        },
    )
    updated = run_cli("update", config=path)
    assert updated.returncode == 0, updated.stderr
    assert "entries: 8 new" in updated.stdout
    return path


def search_json(config: Path, *args: str) -> list[dict[str, object]]:
    result = run_cli("search", *args, "--format", "json", config=config)
    assert result.returncode == 0, result.stderr
    hits: list[dict[str, object]] = json.loads(result.stdout)
    return hits


def titles(hits: list[dict[str, object]]) -> list[object]:
    return [hit["title"] for hit in hits]


def test_json_shape_and_ranking(config: Path) -> None:
    hits = search_json(config, "binance")
    assert all(set(hit) == EXPECTED_KEYS for hit in hits)
    # The summary-only match is newer than one of the title matches, yet comes last.
    assert titles(hits)[-1] == "Stablecoin supply reaches a new high"
    assert len(hits) == 3
    ranks = [hit["rank"] for hit in hits]
    assert all(isinstance(rank, float) for rank in ranks) and ranks == sorted(ranks)  # type: ignore[type-var]
    # The rank is the bm25 score FTS5 itself gives (a title match weighing five times one in the summary).
    with sqlite3.connect(config.parent / "data" / "aggregator.db") as conn:
        bm25 = dict(
            conn.execute(
                "SELECT e.uid, bm25(entries_fts, 5.0, 1.0) FROM entries_fts JOIN entries e ON e.id = entries_fts.rowid "
                "WHERE entries_fts MATCH '\"binance\"'"
            ).fetchall()
        )
    assert ranks == pytest.approx([bm25[hit["id"]] for hit in hits], rel=1e-12)
    reserves = hits[-1]
    assert reserves["snippet"] == "Analysts said «Binance»'s reserves grew while Crypto.com trimmed its holdings."
    assert reserves["feed"] == "ledger" and reserves["published"] == "2024-05-01T10:00:00Z"
    assert reserves["link"] == "https://ledger.example/ledger-reserves"
    assert str(reserves["id"]).startswith("urn:uuid:")
    assert {"Blockchain/Binance", "Blockchain/Crypto.com"} <= set(reserves["tags"])  # type: ignore[call-overload]
    assert all(hit["story"] is None or str(hit["story"]).startswith("urn:uuid:") for hit in hits)


def test_words_with_dots_and_apostrophes(config: Path) -> None:
    assert set(titles(search_json(config, "Crypto.com"))) == {
        "Crypto.com adds staking for Solana",
        "Stablecoin supply reaches a new high",
    }
    (hit,) = search_json(config, "Binance's")
    assert hit["snippet"] == "Analysts said «Binance's» reserves grew while Crypto.com trimmed its holdings."


def test_filters(config: Path) -> None:
    assert titles(search_json(config, "binance", "--feed", "wire")) == [WIRE[0][1]]
    assert titles(search_json(config, "Crypto.com", "--tag", "Blockchain/Solana")) == [LEDGER[2][1]]
    assert titles(search_json(config, "Crypto.com", "--tag", "solana")) == [LEDGER[2][1]]
    assert titles(search_json(config, "Crypto.com", "--since", "2024-05-01")) == [LEDGER[1][1]]
    assert len(search_json(config, "binance", "--limit", "1")) == 1


def test_table_marks_matches_without_a_terminal(config: Path) -> None:
    result = run_cli("search", "reserves", config=config)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["published", "feed", "title"]
    assert lines[1] == "2024-05-01 10:00  ledger  Stablecoin supply reaches a new high"
    assert lines[2] == "    Analysts said Binance's «reserves» grew while Crypto.com trimmed its holdings."
    assert "\x02" not in result.stdout and "\x03" not in result.stdout and "\x1b[" not in result.stdout
    title_only = run_cli("search", "halving", config=config).stdout.splitlines()
    assert title_only[1].endswith("Bitcoin miners brace for the «halving»")
    assert title_only[2] == "    Revenue per block is set to drop by half."
    nothing = run_cli("search", "zebra", config=config)
    assert (nothing.returncode, nothing.stdout, nothing.stderr.strip()) == (0, "", "no entries match 'zebra'")


def test_table_marks_matches_in_bold_on_a_terminal(config: Path) -> None:
    controller, terminal = pty.openpty()
    env = {key: value for key, value in os.environ.items() if key not in ("AGGREGATOR_CONFIG", "NO_COLOR")}
    try:
        process = subprocess.run(
            [sys.executable, "-m", "aggregator", "--config", str(config), "search", "reserves"],
            stdout=terminal,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=CLI_TIMEOUT_SECONDS,
        )
        os.close(terminal)
        output = b""
        while chunk := _read_some(controller):
            output += chunk
    finally:
        os.close(controller)
    assert process.returncode == 0, process.stderr
    assert b"Binance's \x1b[1mreserves\x1b[0m grew" in output and "«".encode() not in output


def _read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # Linux reports the closed terminal side as EIO
        return b""


@pytest.mark.parametrize("query", ["AND OR", "title:", '"unbalanced'])
def test_a_malformed_query_exits_2_with_a_clear_message(config: Path, query: str) -> None:
    result = run_cli("search", query, config=config)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot read the search query")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_unknown_feed_or_tag_exits_2(config: Path) -> None:
    feed = run_cli("search", "binance", "--feed", "gazette", config=config)
    assert feed.returncode == 2 and "no feed named 'gazette'" in feed.stderr
    tag = run_cli("search", "binance", "--tag", "Blockchain/Pepe", config=config)
    assert tag.returncode == 2 and "no entry is tagged 'Blockchain/Pepe'" in tag.stderr
    assert "Traceback" not in feed.stderr + tag.stderr


def test_tags_tree(config: Path) -> None:
    listed = run_cli("tags", "--format", "json", config=config)
    assert listed.returncode == 0, listed.stderr
    tree = json.loads(listed.stdout)
    assert all(set(node) == {"tag", "count"} for node in tree)
    counts = {node["tag"]: node["count"] for node in tree}
    assert counts["Blockchain/Binance"] == 3 and counts["Blockchain/Crypto.com"] == 2
    paths = [node["tag"] for node in tree]
    assert paths[0] == "Blockchain"  # the most entries
    assert paths.index("Blockchain/Binance") < paths.index("Blockchain/Crypto.com") < paths.index("Blockchain/Solana")
    table = run_cli("tags", config=config).stdout.splitlines()
    assert table[0].split() == ["tag", "entries"]
    assert table[1].split() == ["Blockchain", str(counts["Blockchain"])]
    assert table[2].startswith("  Binance ") and table[2].split() == ["Binance", "3"]


def test_export_tag_and_story(config: Path) -> None:
    result = run_cli("export", "--tag", "binance", config=config)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(record["title"] for record in records) == sorted([LEDGER[0][1], LEDGER[1][1], WIRE[0][1]])
    database = config.parent / "data" / "aggregator.db"
    with sqlite3.connect(database) as conn:
        story_of = dict(
            conn.execute("SELECT e.uid, s.uid FROM entries e LEFT JOIN stories s ON s.id = e.story_id").fetchall()
        )
    for record in records:
        assert record["story"] == story_of[record["id"]]
    # The two outlets' reports of the Dubai office are one story, with one stable id.
    office = [record["story"] for record in records if "Dubai" in record["title"]]
    assert len(office) == 2 and office[0] == office[1] and str(office[0]).startswith("urn:uuid:")

    as_csv = run_cli("export", "--format", "csv", "--tag", "Blockchain/Solana", config=config)
    assert as_csv.returncode == 0, as_csv.stderr
    assert not as_csv.stdout.startswith("\ufeff")
    (row,) = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert row["title"] == LEDGER[2][1] and row["published"] == "2024-04-28T09:30:00Z"
    assert "Blockchain/Solana" in row["tags"].split(";")

    unknown = run_cli("export", "--tag", "Pepe", config=config)
    assert unknown.returncode == 2 and "no entry is tagged 'Pepe'" in unknown.stderr


@pytest.fixture
def served(config: Path) -> Iterator[str]:
    env = {key: value for key, value in os.environ.items() if key != "AGGREGATOR_CONFIG"}
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the serve line is flushed at once; the test's timeout bounds this
        assert "search at http://127.0.0.1:" in first, first
        yield first.split("search at ", 1)[1].split()[0]
    finally:
        process.kill()
        process.wait(timeout=CLI_TIMEOUT_SECONDS)


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


def test_serve_answers_search_escaping_what_feeds_sent(served: str) -> None:
    status, body = fetch(served + "?" + urllib.parse.urlencode({"q": "difficulty"}))
    assert status == 200
    assert "<script" not in body
    assert "Miners see <mark>difficulty</mark> climb as fees drop &lt;$1 &amp; &#34;pools&#34; cheer &lt;script" in body
    status, body = fetch(served + "?" + urllib.parse.urlencode({"q": "AND OR"}))
    assert status == 400 and "cannot read the search query" in body


@pytest.mark.parametrize("command", [("search", "bitcoin"), ("feeds",), ("export",), ("tags",)])
def test_a_reader_that_stops_reading_ends_the_command_quietly(config: Path, command: tuple[str, ...]) -> None:
    env = {key: value for key, value in os.environ.items() if key != "AGGREGATOR_CONFIG"}
    reader, writer = os.pipe()
    os.close(reader)  # like `| head` that has already read what it wanted
    try:
        process = subprocess.run(
            [sys.executable, "-m", "aggregator", "--config", str(config), *command],
            stdout=writer,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
        )
    finally:
        os.close(writer)
    assert (process.returncode, process.stderr) == (0, "")
