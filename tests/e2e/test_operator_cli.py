"""What an operator sees of the real `aggregator` command: the update's progress on a terminal
and in a pipe, a CSV export a spreadsheet opens, shell completion, --version, a quick --help."""

from __future__ import annotations

import csv
import fcntl
import io
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from aggregator import __version__
from tests.e2e.cli import CLI_TIMEOUT_SECONDS, write_config
from tests.feedserver import FeedServer

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
TRICKY_TITLE = 'Bitcoin, "ETF" approval — ünïcødé 比特币'
EXPORT_HEADER = ["id", "feed", "title", "link", "author", "published", "updated", "summary", "tags", "story"]
# Modules that `--help` (and an update without a terminal) must not pay for.
HEAVY_MODULES = ("rich", "datasette", "sqlite_utils", "httpx", "feedparser", "pydantic", "jinja2", "apscheduler")


def rss(title: str, *items: tuple[str, str, str]) -> bytes:
    """An RSS 2.0 document with (guid, title, description) items, written for these tests."""
    parts = [f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>{title}</title>']
    parts.append("<link>https://desk.example/</link><description>Test desk</description>")
    for number, (guid, item_title, description) in enumerate(items):
        parts.append(
            f"<item><guid>{guid}</guid><title>{item_title}</title><link>https://desk.example/{guid}</link>"
            f"<author>desk@desk.example (Desk, News)</author>"
            f"<pubDate>Tue, 05 Mar 2024 1{number}:00:00 +0000</pubDate>"
            f"<description><![CDATA[{description}]]></description></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode("utf-8")


@pytest.fixture
def config(tmp_path: Path, feed_server: FeedServer) -> Path:
    """Three feeds: one with commas, quotes, line breaks and non-ASCII text; one plain; one failing."""
    feed_server.add(
        "/alpha.xml",
        rss(
            "Alpha",
            (
                "a1",
                "Bitcoin, &quot;ETF&quot; approval — ünïcødé 比特币",
                "<p>First line, with a comma\nsecond line</p>",
            ),
            ("a2", "Ether markets steady", "<p>Quiet day.</p>"),
        ),
    )
    feed_server.add("/beta.xml", rss("Beta", ("b1", "Mining difficulty rises", "<p>Hashrate up.</p>")))
    feed_server.add("/broken.xml", b"down for maintenance", status=500, content_type="text/plain")
    return write_config(
        tmp_path,
        {
            "alpha": feed_server.url("/alpha.xml"),
            "albatross": feed_server.url("/alpha.xml"),
            "broken": feed_server.url("/broken.xml"),
        },
    )


def environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "AGGREGATOR_CONFIG"}
    env.update(extra)
    return env


def run(*args: str, python_flags: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess[bytes]:
    """The real CLI as a subprocess with pipes (no terminal), raw bytes out."""
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "aggregator", *args],
        capture_output=True,
        timeout=CLI_TIMEOUT_SECONDS,
        env=environment(**env),
        stdin=subprocess.DEVNULL,
    )


def run_on_terminal(*args: str) -> tuple[str, str, int]:
    """The real CLI with stderr on a pseudo-terminal (120 columns), stdout on a pipe.

    Returns (what the terminal showed, stdout, exit code).
    """
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        env=environment(TERM="xterm-256color"),
    )
    os.close(terminal)
    shown = bytearray()
    deadline = time.monotonic() + CLI_TIMEOUT_SECONDS
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            shown += data
        else:
            process.kill()
            pytest.fail(f"aggregator {' '.join(args)} did not finish within {CLI_TIMEOUT_SECONDS} s")
        assert process.stdout is not None
        stdout = process.stdout.read().decode()
        code = process.wait(timeout=CLI_TIMEOUT_SECONDS)
    finally:
        os.close(controller)
        if process.stdout is not None:
            process.stdout.close()
    return ANSI.sub("", shown.decode(errors="replace")), stdout, code


def imported(importtime_log: str) -> set[str]:
    """The modules named in `python -X importtime` output."""
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in importtime_log.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def heavy(modules: set[str]) -> set[str]:
    return {module for module in modules if module.split(".")[0] in HEAVY_MODULES}


def test_update_on_a_terminal_shows_a_bar_with_failures_then_the_summary(config: Path) -> None:
    shown, stdout, code = run_on_terminal("--config", str(config), "update")
    assert code == 0, shown
    assert "Polling feeds" in shown and "3/3" in shown and "1 failed" in shown
    assert "Grouping stories" in shown
    assert re.search(r"WARNING aggregator\.update: feed broken failed: .*500", shown), "the warning prints whole"
    assert stdout == "3 feeds: 2 ok, 0 not modified, 1 failed; entries: 4 new, 0 updated\n"


def test_update_without_a_terminal_prints_plain_lines(config: Path) -> None:
    result = run("--config", str(config), "-v", "update")
    assert result.returncode == 0, result.stderr.decode()
    stderr, stdout = result.stderr.decode(), result.stdout.decode()
    assert "\x1b" not in stderr + stdout
    feed_lines = [line for line in stderr.splitlines() if "aggregator.update: feed " in line]
    assert len(feed_lines) == 3, "one line per finished feed at -v"
    assert any("feed alpha: HTTP 200, 2 new" in line for line in feed_lines)
    assert any("feed broken failed" in line for line in feed_lines)
    assert stdout == "3 feeds: 2 ok, 0 not modified, 1 failed; entries: 4 new, 0 updated\n"


def test_export_csv_is_utf8_iso_dated_and_quoted_whatever_the_locale(config: Path) -> None:
    assert run("--config", str(config), "update").returncode == 0
    result = run("--config", str(config), "export", "--format", "csv", LC_ALL="C", PYTHONIOENCODING="latin-1")
    assert result.returncode == 0, result.stderr.decode()
    assert not result.stdout.startswith(b"\xef\xbb\xbf"), "no byte-order mark"
    text = result.stdout.decode("utf-8")
    assert '"Bitcoin, ""ETF"" approval — ünïcødé 比特币"' in text, "commas and quotes are quoted, quotes doubled"
    header, *rows = list(csv.reader(io.StringIO(text, newline="")))
    assert header == EXPORT_HEADER
    records = [dict(zip(header, row, strict=True)) for row in rows]
    assert len(records) == 4
    tricky = next(record for record in records if record["feed"] == "alpha" and record["title"] == TRICKY_TITLE)
    assert tricky["summary"] == "<p>First line, with a comma\nsecond line</p>", "a line break stays inside its field"
    assert tricky["author"] == "Desk, News"
    assert tricky["published"] == "2024-03-05T10:00:00Z"
    assert all(ISO_UTC.match(record["published"]) and ISO_UTC.match(record["updated"]) for record in records)
    assert all(record["id"].startswith("urn:uuid:") for record in records)


def test_shell_completion_scripts_and_answers(config: Path, feed_server: FeedServer) -> None:
    bash_script = run(_AGGREGATOR_COMPLETE="bash_source").stdout.decode()
    assert "complete -o nosort -F _aggregator_completion aggregator" in bash_script
    assert run(_AGGREGATOR_COMPLETE="zsh_source").stdout.decode().startswith("#compdef aggregator")
    commands = run(_AGGREGATOR_COMPLETE="bash_complete", COMP_WORDS="aggregator upd", COMP_CWORD="1")
    assert commands.stdout.decode().splitlines() == ["plain,update"]
    words = f"aggregator --config {config} update --feed al"
    feeds = run(_AGGREGATOR_COMPLETE="zsh_complete", COMP_WORDS=words, COMP_CWORD="5")
    url = feed_server.url("/alpha.xml")  # zsh shows each name's URL beside it
    assert feeds.stdout.decode().splitlines() == ["plain", "alpha", url, "plain", "albatross", url]
    broken = run(_AGGREGATOR_COMPLETE="bash_complete", COMP_WORDS=f"{words} --config /nowhere.yaml", COMP_CWORD="5")
    assert broken.returncode == 0 and broken.stderr == b""


def test_bash_completes_a_feed_name_through_the_sourced_script(config: Path) -> None:
    """The whole path a user takes: source the script in bash, press Tab after `--feed al`."""
    bash = shutil.which("bash")
    command = Path(sys.executable).parent / "aggregator"
    if bash is None or not command.exists():
        pytest.skip("needs bash and the installed `aggregator` command beside the interpreter")
    script = (
        'eval "$(_AGGREGATOR_COMPLETE=bash_source aggregator)"\n'
        f'COMP_WORDS=(aggregator --config "{config}" update --feed al); COMP_CWORD=5\n'
        "_aggregator_completion aggregator\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = environment(PATH=f"{command.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run([bash, "-c", script], capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["alpha", "albatross"]


def test_version_and_a_light_help() -> None:
    version = run("--version")
    assert version.stdout.decode() == f"aggregator, version {__version__}\n"
    shown = run("--help", python_flags=("-X", "importtime"))
    assert shown.returncode == 0
    assert shown.stdout.decode().startswith("Usage: aggregator [OPTIONS] COMMAND [ARGS]...")
    assert "aggregator.cli" in imported(shown.stderr.decode())
    assert not heavy(imported(shown.stderr.decode())), "--help starts without the heavy libraries"
