"""Cross-outlet stories through the real CLI: three outlets report one event, it is shown once.

Loopback feeds -> `aggregator update` -> stories in SQLite -> `aggregator render` -> the digest
lists the event once under "Top stories" with every outlet, and feed.atom carries one item for
it whose id stays put while its `updated` moves when another outlet joins.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

import lxml.etree
import lxml.html
import pytest

from tests.conftest import VALIDATOR
from tests.e2e.cli import run_cli, write_config
from tests.feedserver import FeedServer

ATOM = "{http://www.w3.org/2005/Atom}"
NOW = datetime.now(UTC).replace(microsecond=0)

# (guid, title, summary, minutes ago); every text is written for this test.
HALT = [
    (
        "alpha-halt",
        "Kraken halts withdrawals after a wallet exploit drains $40 million",
        "The exchange paused all crypto withdrawals on Tuesday after attackers drained about $40 million "
        "from one of its hot wallets, and said customer balances were safe.",
        180,
    ),
    (
        "beta-halt",
        "Exploit at Kraken: exchange pauses withdrawals as $40M is drained from a hot wallet",
        "Kraken stopped crypto withdrawals after an attacker drained roughly $40 million from a hot wallet; "
        "the exchange said it would cover any losses.",
        150,
    ),
    (
        "gamma-halt",
        "Kraken pauses crypto withdrawals following $40 million hot wallet exploit",
        "Withdrawals at Kraken were suspended after a hot wallet exploit cost the exchange close to "
        "$40 million, according to a statement.",
        60,
    ),
]
OTHERS = {
    "alpha": [
        (
            "alpha-etf",
            "Spot ether ETFs record a fourth week of inflows",
            "Funds tracking ether took in fresh money again, led by the largest issuer.",
            200,
        )
    ],
    "beta": [
        (
            "beta-mining",
            "Bitcoin mining difficulty climbs to a new record",
            "The network adjusted its difficulty upward as more hashrate came online.",
            190,
        )
    ],
    "gamma": [
        (
            "gamma-nft",
            "An NFT collection of sea monsters sells out in minutes",
            "The drop of 5,000 images minted out shortly after it opened.",
            170,
        )
    ],
}


def rss(title: str, items: list[tuple[str, str, str, int]]) -> bytes:
    parts = [f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>{escape(title)}</title>']
    parts.append(f"<link>https://{title.lower()}.example/</link><description>{escape(title)} news</description>")
    for guid, headline, summary, minutes in items:
        published = format_datetime(NOW - timedelta(minutes=minutes), usegmt=True)
        parts.append(
            f"<item><title>{escape(headline)}</title><guid>{guid}</guid>"
            f"<link>https://{title.lower()}.example/{guid}</link><pubDate>{published}</pubDate>"
            f"<description>{escape(summary)}</description></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode("utf-8")


@pytest.fixture
def outlets(tmp_path: Path, feed_server: FeedServer) -> Path:
    """Alpha and Beta report the exploit now; Gamma will report it later."""
    feed_server.add("/alpha.xml", rss("Alpha", [HALT[0], *OTHERS["alpha"]]))
    feed_server.add("/beta.xml", rss("Beta", [HALT[1], *OTHERS["beta"]]))
    feed_server.add("/gamma.xml", rss("Gamma", OTHERS["gamma"]))
    write_config(
        tmp_path,
        {name: feed_server.url(f"/{name}.xml") for name in ("alpha", "beta", "gamma")},
        extra="timezone: UTC",
    )
    return tmp_path / "feeds.yaml"


def stories_in(database: Path) -> dict[str, set[str]]:
    """Story id -> the guids of its entries."""
    conn = sqlite3.connect(database)
    try:
        rows = conn.execute("SELECT story_id, key FROM entries").fetchall()
    finally:
        conn.close()
    groups: dict[str, set[str]] = {}
    for story, key in rows:
        groups.setdefault(str(story), set()).add(key)
    return groups


def feed_items(path: Path) -> dict[str, tuple[str, str, str]]:
    """Atom id -> (title, updated, content) of every item."""
    root = lxml.etree.fromstring(path.read_bytes())
    return {
        entry.findtext(f"{ATOM}id") or "": (
            entry.findtext(f"{ATOM}title") or "",
            entry.findtext(f"{ATOM}updated") or "",
            entry.findtext(f"{ATOM}content") or "",
        )
        for entry in root.iter(f"{ATOM}entry")
    }


def validate(path: Path) -> None:
    if VALIDATOR.is_file():
        result = subprocess.run([sys.executable, str(VALIDATOR), str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_one_event_from_three_outlets_is_one_story_refreshed_not_repeated(
    outlets: Path, feed_server: FeedServer
) -> None:
    database = outlets.parent / "data" / "aggregator.db"
    public = outlets.parent / "data" / "public"
    assert run_cli("update", config=outlets).returncode == 0
    groups = stories_in(database)
    assert {"alpha-halt", "beta-halt"} in groups.values()
    assert sum(1 for members in groups.values() if len(members) > 1) == 1, groups

    assert run_cli("render", config=outlets).returncode == 0
    validate(public / "feed.atom")
    before = feed_items(public / "feed.atom")
    halt_items = [key for key, (title, _, _) in before.items() if "Kraken" in title]
    assert len(halt_items) == 1, before
    story_id = halt_items[0]
    title, updated_before, content = before[story_id]
    assert title == HALT[0][1], "the headline is the first reporter's"
    assert "alpha.example/alpha-halt" in content and "beta.example/beta-halt" in content
    assert len(before) == 4  # the story and three single reports

    page = lxml.html.fromstring((public / "index.html").read_bytes())
    top = page.xpath("//section[h2[@id='top']]")
    assert top, "no Top stories section"
    headlines = top[0].xpath(".//li[contains(@class, 'story')]//div[@class='headline']")
    assert [h.text_content().strip() for h in headlines] == [HALT[0][1]]
    reports = top[0].xpath(".//ul[@class='reports']/li")
    assert len(reports) == 2
    assert "first" in reports[0].text_content()
    assert {link.get("href") for link in top[0].xpath(".//ul[@class='reports']//a")} >= {
        "https://alpha.example/alpha-halt",
        "https://beta.example/beta-halt",
    }
    tag_links = {link.get("href") for link in top[0].xpath(".//ul[@class='tags']//a")}
    assert "tags/blockchain/kraken.html" in tag_links
    assert (public / "tags" / "blockchain" / "kraken.html").is_file()
    assert page.text_content().count(HALT[0][1]) == 1, "the event is shown once"

    # Gamma reports it later: the same feed item, refreshed. Stored times have one-second
    # resolution, so let a second pass for "later" to show in `updated`.
    time.sleep(1.1)
    feed_server.add("/gamma.xml", rss("Gamma", [HALT[2], *OTHERS["gamma"]]))
    assert run_cli("update", config=outlets).returncode == 0
    assert {"alpha-halt", "beta-halt", "gamma-halt"} in stories_in(database).values()
    assert run_cli("render", config=outlets).returncode == 0
    validate(public / "feed.atom")
    after = feed_items(public / "feed.atom")
    assert set(after) == set(before), "a joining outlet adds no item"
    _, updated_after, content_after = after[story_id]
    assert updated_after > updated_before
    assert "gamma.example/gamma-halt" in content_after
    kraken_feed = feed_items(public / "tags" / "blockchain" / "kraken.atom")
    assert list(kraken_feed) == [story_id]

    # Another poll with nothing new leaves the stories as they are.
    assert run_cli("update", config=outlets).returncode == 0
    assert (
        stories_in(database) == stories_in(database)
        and {"alpha-halt", "beta-halt", "gamma-halt"} in stories_in(database).values()
    )


def test_one_item_per_entry_when_configured(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/alpha.xml", rss("Alpha", [HALT[0]]))
    feed_server.add("/beta.xml", rss("Beta", [HALT[1]]))
    config = write_config(
        tmp_path,
        {name: feed_server.url(f"/{name}.xml") for name in ("alpha", "beta")},
        extra="output: {per: entry}",
    )
    assert run_cli("update", config=config).returncode == 0
    assert run_cli("render", config=config).returncode == 0
    items = feed_items(tmp_path / "data" / "public" / "feed.atom")
    assert len(items) == 2
