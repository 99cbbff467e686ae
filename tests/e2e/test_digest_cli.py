"""`aggregator digest` as a real process: Markdown, text and HTML from a real database, --out, --email
to a real SMTP server on loopback, and errors in words."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import lxml.html
import pytest
from markdown_it import MarkdownIt

from tests.e2e.cli import run_cli, write_config
from tests.feedgen import rss
from tests.feedserver import FeedServer
from tests.smtpserver import SMTPServer, free_port

pytestmark = pytest.mark.timeout(120)

DAY = "2024-05-02"
# The parser drops the tag (titles are plain text); the Markdown that is left must stay words.
HOSTILE = "<img src=x onerror=alert(1)> [win](javascript:alert(2)) *Binance* # breaks `out` <b>"
HOSTILE_WORDS = "[win](javascript:alert(2)) *Binance* # breaks `out`"


def published(hour: int) -> datetime:
    return datetime(2024, 5, 2, hour, tzinfo=UTC)


@pytest.fixture
def config(tmp_path: Path, feed_server: FeedServer) -> Path:
    """Two outlets with a day of news in the database, and an email: section for a local relay."""
    feed_server.add(
        "/alpha.xml",
        rss(
            "Alpha News",
            [
                ("a1", "Exchange halts withdrawals after a wallet exploit", published(9)),
                ("a2", HOSTILE, published(11)),
            ],
        ),
    )
    feed_server.add("/beta.xml", rss("Beta Wire", [("b1", "A quiet day for bitcoin miners", published(10))]))
    smtp_port = free_port()
    path = write_config(
        tmp_path,
        {"alpha": feed_server.url("/alpha.xml"), "beta": feed_server.url("/beta.xml")},
        extra=(
            f"email: {{host: 127.0.0.1, port: {smtp_port}, security: none, from: digest@news.example,"
            " to: [reader@example.com]}"
        ),
    )
    updated = run_cli("update", config=path)
    assert updated.returncode == 0, updated.stderr
    return path


def smtp_port(config: Path) -> int:
    text = config.read_text(encoding="utf-8")
    return int(text.split("port: ", 1)[1].split(",", 1)[0])


def test_markdown_text_and_html_of_a_day(config: Path, tmp_path: Path) -> None:
    result = run_cli("digest", "--date", DAY, "--format", "md", config=config)
    assert result.returncode == 0, result.stderr
    markdown = result.stdout
    tokens = MarkdownIt("commonmark").parse(markdown)
    assert not [token for token in tokens for child in [token, *(token.children or ())] if "html" in child.type]
    page = lxml.html.fromstring(MarkdownIt("commonmark").render(markdown))
    assert page.xpath("//h1")[0].text_content() == "Test Digest: Thursday, 2 May 2024"
    headlines = [h3.text_content() for h3 in page.xpath("//h3")]
    assert "Exchange halts withdrawals after a wallet exploit" in headlines
    assert HOSTILE_WORDS in headlines  # shown as words, not as a link, emphasis, heading or code
    hrefs = set(page.xpath("//a/@href"))
    assert {"https://news.example/a1", "https://news.example/a2", "https://news.example/b1"} <= hrefs
    assert not [href for href in hrefs if not href.startswith("http")]

    out = tmp_path / "digest.txt"
    written = run_cli("digest", "--date", DAY, "--format", "text", "--out", str(out), config=config)
    assert written.returncode == 0 and written.stdout == "", written.stderr
    text = out.read_text(encoding="utf-8")
    assert text.startswith("Test Digest: Thursday, 2 May 2024\n3 stories from 3 reports\n")
    assert "    https://news.example/b1" in text.splitlines()
    assert not list(tmp_path.glob(".digest.txt.*")), "a temporary file was left behind"

    html = run_cli("digest", "--date", DAY, config=config)
    assert html.returncode == 0, html.stderr
    assert "Exchange halts withdrawals after a wallet exploit" in lxml.html.fromstring(html.stdout).text_content()


def test_email_now_goes_to_the_smtp_server_once_it_is_up(config: Path) -> None:
    down = run_cli("digest", "--date", DAY, "--email", config=config)
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert (
        f"error: could not connect to the SMTP server 127.0.0.1:{smtp_port(config)}: connection refused" in down.stderr
    )
    with SMTPServer(port=smtp_port(config)) as server:
        result = run_cli("digest", "--date", DAY, "--email", config=config)
        assert result.returncode == 0, result.stderr
        (received,) = server.messages()
    assert result.stdout.strip() == f"sent the digest of {DAY} (3 stories) to reader@example.com"
    message = received.message
    assert message["Subject"] == f"Test Digest: {DAY}" and message["To"] == "reader@example.com"
    text, html = (part.get_content() for part in message.iter_parts())
    assert "https://news.example/a1" in text and HOSTILE_WORDS in text and "<" not in text
    assert "https://news.example/a1" in lxml.html.fromstring(html).xpath("//a/@href")


def test_usage_errors_are_sentences_with_exit_code_2(tmp_path: Path) -> None:
    plain = write_config(tmp_path, {"x": "http://127.0.0.1:9/feed.xml"})
    bad_date = run_cli("digest", "--date", "2024-13-01", config=plain)
    assert bad_date.returncode == 2 and "'2024-13-01' does not match the format '%Y-%m-%d'" in bad_date.stderr
    no_email = run_cli("digest", "--email", config=plain)
    assert no_email.returncode == 2 and "email: is not set (add an email: section" in no_email.stderr
    for result in (bad_date, no_email):
        assert "Traceback" not in result.stderr
