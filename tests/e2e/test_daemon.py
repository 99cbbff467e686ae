"""`aggregator run` as a real process against a loopback server: schedule, render, digest, signals, restarts."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import sqlite3
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.cli import run_cli
from tests.e2e.daemon import DaemonProcess, wait_for
from tests.feedgen import numbered_feed, rss
from tests.feedserver import FeedServer
from tests.smtpserver import SMTPServer

pytestmark = pytest.mark.timeout(90)

# Seconds a poll may come early by, at most, in the server's log (thread hand-off, clock reads).
CLOCK_SLACK = 0.05


def write_daemon_config(directory: Path, feeds: dict[str, str], interval: str = "2s", extra: str = "") -> Path:
    lines = [
        "title: Daemon Test",
        "daemon: {render_debounce: 1s, max_jitter: 0.2s}",
        f"defaults: {{interval: {interval}, timeout: 5s}}",
        extra,
        "feeds:",
    ]
    for name, url in feeds.items():
        lines += [f"  - name: {name}", f"    url: {url}"]
    path = directory / "feeds.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def polls(server: FeedServer, path: str) -> int:
    return len(server.hits(path))


def query(database: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(database, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def gaps(server: FeedServer, path: str) -> list[float]:
    times = [hit.at for hit in server.hits(path)]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def test_polls_on_interval_conditionally_and_publishes_new_items(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/a.xml", numbered_feed("alpha", 3))
    feed_server.add("/b.xml", numbered_feed("beta", 2))
    config = write_daemon_config(tmp_path, {"alpha": feed_server.url("/a.xml"), "beta": feed_server.url("/b.xml")})
    atom = tmp_path / "data" / "public" / "feed.atom"
    with DaemonProcess(config, "--no-serve") as daemon:
        wait_for(lambda: len(feed_server.hits("/a.xml")) >= 3, 30, "three polls of alpha")
        wait_for(lambda: atom.exists() and "alpha #0" in atom.read_text(encoding="utf-8"), 15, "the first render")
        feed_server.add("/a.xml", rss("alpha", [("alpha-new", "A brand new alpha headline", datetime.now(UTC))]))
        wait_for(lambda: "A brand new alpha headline" in atom.read_text(encoding="utf-8"), 15, "the new item")
        started = time.monotonic()
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log
        assert time.monotonic() - started < 10
    for path in ("/a.xml", "/b.xml"):
        hits = feed_server.hits(path)
        assert all("if-none-match" in hit.headers for hit in hits[1:])
        assert 304 in {hit.status for hit in hits[1:]}
        assert min(gaps(feed_server, path)) >= 2.0 - CLOCK_SLACK, gaps(feed_server, path)
    assert "feed alpha: HTTP 304" in daemon.log


def test_retry_after_is_honoured_and_failures_back_off(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/limited.xml", b"slow down", status=429, headers={"Retry-After": "3600"})
    feed_server.add("/failing.xml", b"broken", status=500)
    feed_server.add("/healthy.xml", numbered_feed("healthy", 2))
    config = write_daemon_config(
        tmp_path,
        {
            "limited": feed_server.url("/limited.xml"),
            "failing": feed_server.url("/failing.xml"),
            "healthy": feed_server.url("/healthy.xml"),
        },
        interval="1s",
    )
    with DaemonProcess(config, "--no-serve") as daemon:
        wait_for(lambda: len(feed_server.hits("/failing.xml")) >= 4, 30, "four polls of the failing feed")
        assert daemon.stop() == 0
    assert len(feed_server.hits("/limited.xml")) == 1
    failing = gaps(feed_server, "/failing.xml")
    assert all(later > earlier * 1.5 for earlier, later in itertools.pairwise(failing)), failing
    assert len(feed_server.hits("/healthy.xml")) >= len(feed_server.hits("/failing.xml"))
    listing = json.loads(run_cli("feeds", "--format", "json", config=config).stdout)
    limited = next(feed for feed in listing if feed["name"] == "limited")
    assert limited["next_reason"] == "Retry-After"
    next_fetch = datetime.fromisoformat(limited["next_fetch"].replace("Z", "+00:00"))
    assert next_fetch > datetime.now(UTC) + timedelta(minutes=50)
    failing_feed = next(feed for feed in listing if feed["name"] == "failing")
    assert failing_feed["next_reason"].startswith("backoff after")


def test_restart_resumes_the_stored_schedule(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/slow.xml", numbered_feed("slow", 2))
    config = write_daemon_config(tmp_path, {"slow": feed_server.url("/slow.xml")}, interval="1h")
    with DaemonProcess(config, "--no-serve") as daemon:
        wait_for(lambda: len(feed_server.hits("/slow.xml")) == 1, 20, "the first poll")
        assert daemon.stop() == 0
    with DaemonProcess(config, "--no-serve") as daemon:
        wait_for(lambda: "daemon started" in daemon.log, 20, "the second start")
        wait_for(lambda: "resume their stored schedule" in daemon.log, 20, "the schedule log line")
        assert daemon.stop() == 0
    assert len(feed_server.hits("/slow.xml")) == 1


def descendants(pid: int) -> set[int]:
    """The processes started by `pid`, and by them, as /proc lists them now (Linux)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_kill_9_during_a_big_update_loses_nothing_stored(tmp_path: Path, feed_server: FeedServer) -> None:
    feeds = {}
    for index in range(40):
        feeds[f"big-{index}"] = feed_server.add(f"/big-{index}.xml", numbered_feed(f"big{index}", 400))
    config = write_daemon_config(tmp_path, feeds, interval="1h")
    database = tmp_path / "data" / "aggregator.db"

    def stored() -> int:
        try:
            return int(query(database, "SELECT count(*) FROM entries")[0][0]) if database.exists() else 0
        except sqlite3.OperationalError:
            return 0  # the daemon is still creating the schema

    with DaemonProcess(config, "--no-serve") as daemon:
        wait_for(lambda: stored() > 0, 30, "the first stored feed")
        helpers = descendants(daemon.process.pid)  # its worker processes (and their fork server)
        daemon.process.kill()
        daemon.process.wait(timeout=10)
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in helpers), 20, "its workers to exit too")
    before = {row[0] for row in query(database, "SELECT uid FROM entries")}
    with DaemonProcess(config, "--no-serve") as daemon:
        wait_for(lambda: stored() == 40 * 400, 60, "every entry after the restart")
        assert daemon.stop() == 0
    assert query(database, "PRAGMA integrity_check") == [("ok",)]
    assert query(database, "SELECT count(*) FROM (SELECT 1 FROM entries GROUP BY feed_id, key HAVING count(*) > 1)")[
        0
    ] == (0,)
    after = {row[0] for row in query(database, "SELECT uid FROM entries")}
    assert before <= after


def test_digest_is_written_at_the_digest_time(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/d.xml", numbered_feed("digest", 2))
    soon = datetime.now(UTC) + timedelta(seconds=4)
    if soon.date() != datetime.now(UTC).date():
        pytest.skip("too close to midnight UTC for a same-day digest time")
    config = write_daemon_config(
        tmp_path, {"digest": feed_server.url("/d.xml")}, interval="1h", extra=f'digest: {{time: "{soon:%H:%M:%S}"}}'
    )
    database = tmp_path / "data" / "aggregator.db"

    def last_digest() -> str | None:
        if not database.exists():
            return None
        try:
            rows = query(database, "SELECT value FROM meta WHERE key = 'last_digest'")
        except sqlite3.OperationalError:
            return None  # the daemon is still creating the schema
        return str(rows[0][0]) if rows else None

    with DaemonProcess(config, "--no-serve") as daemon:
        yesterday = (soon - timedelta(days=1)).date().isoformat()
        wait_for(lambda: last_digest() == yesterday, 20, "the missed digest made up at start")
        wait_for(lambda: last_digest() == soon.date().isoformat(), 20, "the digest at its time")
        assert daemon.stop() == 0
    assert (tmp_path / "data" / "public" / "digest" / f"{soon.date().isoformat()}.html").exists()
    assert "digest of" in daemon.log


def test_second_daemon_refuses_and_readers_keep_working(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/x.xml", numbered_feed("x", 3))
    config = write_daemon_config(tmp_path, {"x": feed_server.url("/x.xml")})
    port = free_port()
    with DaemonProcess(config, "--port", str(port)) as first:
        wait_for(lambda: "daemon started" in first.log, 20, "the first daemon")
        with DaemonProcess(config, "--no-serve") as second:
            code = second.process.wait(timeout=20)
            assert code != 0
            assert "aggregator.db.lock" in second.log and "already running" in second.log
            assert "Traceback" not in second.log
        wait_for(lambda: (tmp_path / "data" / "public" / "index.html").exists(), 20, "a render")
        feeds = run_cli("feeds", "--format", "json", config=config)
        assert feeds.returncode == 0 and json.loads(feeds.stdout)[0]["name"] == "x"
        assert run_cli("export", config=config).returncode == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/feed.atom", timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/atom+xml")
        assert first.stop() == 0


def test_reload_adds_feeds_and_rejects_a_broken_config(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/one.xml", numbered_feed("one", 2))
    feed_server.add("/two.xml", numbered_feed("two", 2))
    config = write_daemon_config(tmp_path, {"one": feed_server.url("/one.xml")})
    with DaemonProcess(config, "--no-serve") as daemon:
        wait_for(lambda: len(feed_server.hits("/one.xml")) >= 1, 20, "the first poll")
        write_daemon_config(tmp_path, {"one": feed_server.url("/one.xml"), "two": feed_server.url("/two.xml")})
        reloaded = run_cli("reload", config=config)
        assert reloaded.returncode == 0, reloaded.stderr
        wait_for(lambda: len(feed_server.hits("/two.xml")) >= 1, 20, "the added feed's first poll")
        good = config.read_text(encoding="utf-8")
        config.write_text(good + "  - name: three\n    url: ftp://nowhere.example/\n", encoding="utf-8")
        daemon.send(signal.SIGHUP)
        wait_for(lambda: "reload rejected" in daemon.log, 20, "the rejected reload")
        polls = len(feed_server.hits("/two.xml"))
        wait_for(lambda: len(feed_server.hits("/two.xml")) > polls, 20, "polling to go on")
        assert daemon.stop() == 0
    assert "feeds[2].url" in daemon.log


def test_reload_without_a_daemon_says_so(tmp_path: Path) -> None:
    config = write_daemon_config(tmp_path, {"one": "http://127.0.0.1:9/feed"})
    result = run_cli("reload", config=config)
    assert result.returncode == 1 and "no aggregator daemon is running" in result.stderr


def test_run_once_does_one_cycle_and_exits(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/once.xml", numbered_feed("once", 4))
    config = write_daemon_config(tmp_path, {"once": feed_server.url("/once.xml")})
    result = run_cli("run", "--once", config=config)
    assert result.returncode == 0, result.stderr
    assert "1 feeds: 1 ok" in result.stdout
    assert (tmp_path / "data" / "public" / "index.html").exists()


def test_logs_are_quiet_by_default_and_tell_each_poll_with_v(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/j.xml", numbered_feed("j", 1))
    feed_server.add("/broken.xml", b"oops", status=500)
    config = write_daemon_config(tmp_path, {"j": feed_server.url("/j.xml"), "broken": feed_server.url("/broken.xml")})
    quiet = run_cli("run", "--once", config=config)
    assert quiet.returncode == 0 and "2 feeds: 1 ok" in quiet.stdout
    lines = quiet.stderr.splitlines()
    assert [line for line in lines if "WARNING" in line] == [
        line for line in lines if line.endswith("feed broken failed: HTTP 500 Internal Server Error")
    ] and len(lines) <= 3, lines
    assert "feed j:" not in quiet.stderr and "rendered" not in quiet.stderr

    feed_server.add("/j.xml", numbered_feed("j", 2))
    verbose = run_cli("-v", "--log-format", "json", "run", "--once", config=config)
    records = [json.loads(line) for line in verbose.stderr.splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    messages = [record["message"] for record in records]
    assert any(message.startswith("feed j: HTTP 200, 1 new") for message in messages), messages
    assert any(message.startswith("rendered ") for message in messages), messages
    assert not [record for record in records if record["level"] == "debug"]


def test_sigterm_while_a_poll_is_in_flight(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/stuck.xml", numbered_feed("stuck", 2), delay_seconds=30)
    feed_server.add("/fine.xml", numbered_feed("fine", 2))
    config = write_daemon_config(
        tmp_path, {"stuck": feed_server.url("/stuck.xml"), "fine": feed_server.url("/fine.xml")}, extra=""
    )
    config.write_text(config.read_text(encoding="utf-8").replace("timeout: 5s", "timeout: 60s"), encoding="utf-8")
    with DaemonProcess(config, "--no-serve") as daemon:
        wait_for(lambda: feed_server.hits("/fine.xml") and feed_server.active > 0, 20, "a poll in flight")
        started = time.monotonic()
        assert daemon.stop(signal.SIGINT) == 0, daemon.log
        assert time.monotonic() - started < 10
    database = tmp_path / "data" / "aggregator.db"
    assert query(database, "PRAGMA integrity_check") == [("ok",)]
    assert query(database, "SELECT count(*) FROM entries e JOIN feeds f ON f.id = e.feed_id WHERE f.name = 'fine'") == [
        (2,)
    ]


def test_reload_removes_feeds_and_applies_new_intervals(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/keep.xml", numbered_feed("keep", 2))
    feed_server.add("/drop.xml", numbered_feed("drop", 2))
    config = write_daemon_config(
        tmp_path, {"keep": feed_server.url("/keep.xml"), "drop": feed_server.url("/drop.xml")}, interval="1h"
    )
    with DaemonProcess(config, "--no-serve") as daemon:
        wait_for(lambda: feed_server.hits("/keep.xml") and feed_server.hits("/drop.xml"), 20, "the first polls")
        write_daemon_config(tmp_path, {"keep": feed_server.url("/keep.xml")}, interval="1s")
        daemon.send(signal.SIGHUP)
        wait_for(lambda: len(feed_server.hits("/keep.xml")) >= 3, 20, "polls at the new, shorter interval")
        assert daemon.stop() == 0
    assert len(feed_server.hits("/drop.xml")) == 1
    database = tmp_path / "data" / "aggregator.db"
    assert query(database, "SELECT count(*) FROM entries e JOIN feeds f ON f.id = e.feed_id WHERE f.name = 'drop'") == [
        (2,)
    ]


def test_digest_email_is_retried_while_smtp_is_down_and_sent_once(tmp_path: Path, feed_server: FeedServer) -> None:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    noon = datetime.combine(yesterday, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    feed_server.add(
        "/news.xml",
        rss("News", [("n1", "Miners switch on a new data centre", noon), ("n2", "A token is listed", noon)]),
    )
    port = free_port()
    email = (
        f"email: {{host: 127.0.0.1, port: {port}, security: none, from: digest@news.example, to: me@example.com,"
        ' time: "00:00", retries: 8, retry_delay: 300ms}'
    )
    config = write_daemon_config(tmp_path, {"news": feed_server.url("/news.xml")}, interval="1s", extra=email)
    with DaemonProcess(config, "--no-serve") as daemon:  # no SMTP server yet: it must retry and keep polling
        wait_for(lambda: "failed (try 2 of 9)" in daemon.log, 30, "two failed tries")
        polled = polls(feed_server, "/news.xml")
        wait_for(lambda: polls(feed_server, "/news.xml") >= polled + 2, 20, "polling to go on while SMTP is down")
        with SMTPServer(port=port) as server:
            server.wait_for(1, 60)
            wait_for(lambda: "sent the digest email" in daemon.log, 10, "the sent line")
            assert daemon.stop() == 0
    (received,) = server.messages()
    with DaemonProcess(config, "--no-serve") as restarted, SMTPServer(port=port) as again:
        wait_for(lambda: "the next goes out at" in restarted.log, 30, "the email check after the restart")
        assert restarted.stop() == 0
    assert again.messages() == [], "the same day's digest was sent twice"
    assert (
        f"the digest email of {yesterday} failed (try 1 of 9): could not connect to the SMTP server "
        f"127.0.0.1:{port}: connection refused; trying again in 0.3 s" in daemon.log
    )
    assert f"sent the digest email of {yesterday} (2 stories) to me@example.com" in daemon.log
    assert f"the digest email of {yesterday} was sent; the next goes out at" in restarted.log
    assert "Traceback" not in daemon.log + restarted.log
    assert received.message["Subject"] == f"Daemon Test: {yesterday}"
    text = received.message.get_body(("plain",))
    assert text is not None and "Miners switch on a new data centre" in text.get_content()
