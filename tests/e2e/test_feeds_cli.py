"""The feed-list commands as a user runs them: `opml import|export`, `add` (on a real terminal) and `remove`."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from aggregator.config import load_settings
from aggregator.store import Store
from tests.e2e.cli import CLI_TIMEOUT_SECONDS, run_cli
from tests.feedgen import numbered_feed
from tests.feedserver import FeedServer

DATA = Path(__file__).resolve().parent.parent / "data" / "opml"

FEEDS_YAML = """\
# The outlets I follow.
title: Mine
site_url: http://127.0.0.1:8080/

feeds:
  # Mining first.
  - name: hashrate
    url: http://hashrate.example/feed   # the same feed as https://hashrate.example/feed
    tags: [Mining]

# Extra tags.
tags:
  Blockchain/Pepe: {names: [Pepe], tickers: [PEPE]}
"""


def test_opml_import_and_export_keep_feeds_yaml_and_refuse_a_hostile_file(tmp_path: Path) -> None:
    config = tmp_path / "feeds.yaml"
    config.write_text(FEEDS_YAML, encoding="utf-8")
    imported = run_cli("opml", "import", str(DATA / "freshrss.opml"), config=config)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(f"added 3 feeds to {config}:\n")
    assert "https://hashrate.example/feed: already in feeds.yaml as 'hashrate'" in imported.stdout
    after = config.read_text(encoding="utf-8")
    block_start = after.index("  - name: rulebook-review\n")
    block_end = after.index("\n\n# Extra tags.") + 1
    assert after[:block_start] + after[block_end:] == FEEDS_YAML  # every other byte as it was
    assert "  - name: kripto-pravo\n    url: https://pravo.example/rss/\n    title: Крипто Право\n" in after

    exported = run_cli("opml", "export", config=config)
    assert exported.returncode == 0, exported.stderr
    outlines = ElementTree.fromstring(exported.stdout.encode()).iter("outline")
    urls = [outline.get("xmlUrl") for outline in outlines if outline.get("xmlUrl")]
    assert urls == [feed.url for feed in load_settings(config).feeds]

    hostile = tmp_path / "hostile.opml"
    hostile.write_text('<!DOCTYPE o [<!ENTITY x SYSTEM "file:///etc/passwd">]><opml><body/></opml>', encoding="utf-8")
    refused = run_cli("opml", "import", str(hostile), config=config)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: {hostile}: declares XML entities")
    assert config.read_text(encoding="utf-8") == after


def test_add_asks_which_feed_on_a_terminal(feed_server: FeedServer, tmp_path: Path) -> None:
    links = "".join(
        f'<link rel="alternate" type="application/rss+xml" href="/{name}.xml">' for name in ("news", "opinion")
    )
    feed_server.add("/", f"<!doctype html><html><head>{links}</head><body></body></html>", content_type="text/html")
    feed_server.add("/news.xml", numbered_feed("Ledger News", 2))
    feed_server.add("/opinion.xml", numbered_feed("Ledger Opinion", 4))
    config = tmp_path / "feeds.yaml"
    config.write_text(FEEDS_YAML, encoding="utf-8")
    screen = _on_a_terminal(
        [sys.executable, "-m", "aggregator", "--config", str(config), "add", feed_server.url("/"), "--tag", "Opinion"],
        answer_after=b"Add which one",
        answer=b"2\n",
    )
    assert "offers 2 feeds:" in screen
    assert f"2) Ledger Opinion: {feed_server.url('/opinion.xml')} (4 entries)" in screen
    assert f"added ledger-opinion: {feed_server.url('/opinion.xml')}" in screen
    added = load_settings(config).feeds[-1]
    assert (added.name, added.url, added.tags) == ("ledger-opinion", feed_server.url("/opinion.xml"), ("Opinion",))


def _on_a_terminal(command: list[str], answer_after: bytes, answer: bytes) -> str:
    """Run `command` on a pseudo-terminal, type `answer` once `answer_after` shows, return all it showed."""
    main, secondary = pty.openpty()
    env = {key: value for key, value in os.environ.items() if key != "AGGREGATOR_CONFIG"}
    process = subprocess.Popen(command, stdin=secondary, stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    deadline = time.monotonic() + CLI_TIMEOUT_SECONDS
    shown, answered = b"", False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the terminal closed: the command is done
                break
            if not chunk:
                break
            shown += chunk
            if not answered and answer_after in shown:
                os.write(main, answer)
                answered = True
        assert process.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, shown.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)
    return shown.decode("utf-8", errors="replace").replace("\r\n", "\n")


def test_remove_keeps_entries_unless_purged(feed_server: FeedServer, tmp_path: Path) -> None:
    config = tmp_path / "feeds.yaml"
    feeds = "".join(
        f"  - name: {name}\n    url: {feed_server.url(f'/{name}.xml')}\n    timeout: 5s\n" for name in ("alpha", "beta")
    )
    config.write_text(f"title: T\nsite_url: http://127.0.0.1:8080/\nfeeds:\n{feeds}", encoding="utf-8")
    feed_server.add("/alpha.xml", numbered_feed("Alpha", 3))
    feed_server.add("/beta.xml", numbered_feed("Beta", 2))
    assert run_cli("update", config=config).returncode == 0

    removed = run_cli("remove", "alpha", "--purge", config=config)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith(f"removed alpha from {config}; deleted its 3 entries (`aggregator render --full`")
    assert [feed.name for feed in load_settings(config).feeds] == ["beta"]
    with Store(load_settings(config).database, readonly=True) as store:
        assert {entry.feed for entry in store.iter_entries()} == {"beta"}

    unknown = run_cli("remove", "alpah", config=config)
    assert unknown.returncode == 2
    assert "has no feed named 'alpah'" in unknown.stderr
