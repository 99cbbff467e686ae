"""The browsable site: every page reachable, the archive, the tag index, outlet health, and a real browser.

The pages are rendered from a list of entries (tests.test_render.ListSource) or, for the
outlets' health, end to end by the real CLI against a loopback feed server and a real
SQLite file. The browser test drives headless Chromium (Debian's `chromium`) over its
DevTools pipe: it lays the pages out at phone and desktop widths, in light and dark,
measures that nothing sticks out sideways and takes screenshots; it skips where Chromium
is not installed (`.ci/run` installs it where it can).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import select
import shutil
import struct
import subprocess
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lxml.html
import pytest

from aggregator.models import SiteConfig
from aggregator.render import render_all
from tests.e2e.cli import run_cli, write_config
from tests.feedgen import numbered_feed
from tests.feedserver import FeedServer
from tests.test_render import ListSource, healthy_outlet, make_entry, sample_entries, site_for, story_entries

LATER = datetime(2024, 6, 5, 12, 0, tzinfo=UTC)
LONG_WORD = "Supercalifragilistic" * 8
PHONE = (390, 844)
DESKTOP = (1280, 900)


def site_entries() -> list[Any]:
    """Three days of news, a story of three outlets, and a headline and link with no place to break."""
    unbreakable = make_entry(
        40,
        datetime(2024, 6, 5, 8, 30, tzinfo=UTC),
        f"{LONG_WORD} token lists",
        link="https://cryptonews.example/" + "very-long-path-" * 20,
        tags=("Markets",),
    )
    return [*sample_entries(), *story_entries(), unbreakable]


@pytest.fixture
def site(tmp_path: Path) -> tuple[SiteConfig, Path]:
    site = site_for(tmp_path)
    outlets = [
        healthy_outlet("cryptonews", [e for e in site_entries() if e.feed == "cryptonews"]),
        healthy_outlet("beta"),
        healthy_outlet("gamma", status="error", error_count=3, last_error="timed out after 20 s"),
        healthy_outlet("oldwire", active=False),
    ]
    render_all(ListSource(site_entries(), outlets), site, LATER)
    return site, Path(site.output_dir)


def page(path: Path) -> lxml.html.HtmlElement:
    return lxml.html.fromstring(path.read_bytes())


def local_links(path: Path, out: Path) -> Iterator[Path]:
    """The pages and files under `out` that `path` links to (web links and fragments left out)."""
    for href in page(path).xpath("//a/@href | //link/@href"):
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path:
            continue
        target = (path.parent / parts.path).resolve()
        assert target.is_relative_to(out.resolve()), (path, href)
        yield target


# ------------------------------------------------------------------ links and navigation


def test_every_page_is_reachable_from_the_index_and_no_link_is_broken(site: tuple[SiteConfig, Path]) -> None:
    _site, out = site
    pages = {path.resolve() for path in out.rglob("*.html")}
    seen = {(out / "index.html").resolve()}
    queue = deque(seen)
    while queue:
        current = queue.popleft()
        for target in local_links(current, out):
            assert target.is_file(), f"{current.relative_to(out.resolve())} links to a missing {target}"
            if target.suffix == ".html" and target not in seen:
                seen.add(target)
                queue.append(target)
    assert seen == pages, sorted(str(path) for path in pages - seen)
    assert len(pages) >= 20


def test_every_page_has_the_site_navigation_and_no_script(site: tuple[SiteConfig, Path]) -> None:
    _site, out = site
    for path in out.rglob("*.html"):
        tree = page(path)
        nav = tree.xpath("//nav[@class='site']/a")
        assert [link.text for link in nav] == ["Today", "Archive", "Tags", "Outlets"], path
        assert len(tree.xpath("//nav[@class='site']/a[@aria-current='page']")) <= 1
        assert not tree.xpath("//script | //*[starts-with(@href, 'javascript')] | //@*[starts-with(name(), 'on')]")
        assert tree.xpath("//meta[@name='viewport']/@content") == ["width=device-width, initial-scale=1"]
        style = tree.xpath("string(//head/style)")
        assert "prefers-color-scheme: dark" in style, path


def test_the_archive_lists_every_day_with_the_counts_of_its_page(site: tuple[SiteConfig, Path]) -> None:
    _site, out = site
    archive = page(out / "archive.html")
    days = {link.get("href"): link.getparent().text_content() for link in archive.xpath("//ol[@class='days']/li/a")}
    assert sorted(days) == [f"digest/2024-06-0{day}.html" for day in (3, 4, 5)]
    for href, text in days.items():
        header = page(out / href).xpath("string(//p[@class='date'])")
        stories, reports = re.search(r"(\d+) stor(?:y|ies) from (\d+) reports?", header).groups()  # type: ignore[union-attr]
        assert f"{stories} stor" in text and f"{reports} report" in text, (href, text, header)
    assert archive.xpath("//h2[@id='2024-06']")


def test_the_tag_index_lists_every_tag_with_its_page_and_feeds(site: tuple[SiteConfig, Path]) -> None:
    _site, out = site
    index = page(out / "tags.html")
    rows = index.xpath("//ul[@class='tagtree']/li")
    paths = [row.xpath("string(a/@title)") for row in rows]
    assert "Blockchain/Binance" in paths and "Regulation/SEC" in paths
    assert paths.index("Blockchain") < paths.index("Blockchain/Binance"), "parents come before their children"
    for row in rows:
        hrefs = row.xpath(".//a/@href")
        assert len(hrefs) == 4 and all((out / href).is_file() for href in hrefs), hrefs


def test_outlet_pages_show_health_in_words(site: tuple[SiteConfig, Path]) -> None:
    _site, out = site
    index = page(out / "outlets.html")
    rows = {row.xpath("string(a[@class='name'])"): row for row in index.xpath("//ol[@class='outlets']/li")}
    assert set(rows) == {"Cryptonews", "beta", "gamma", "oldwire"}
    assert rows["gamma"].xpath("string(span[contains(@class, 'state')])") == "Failing (3 times in a row)"
    assert "timed out after 20 s" in rows["gamma"].text_content()
    assert "no longer polled" in rows["oldwire"].text_content()
    assert "1 failing" in index.xpath("string(//p[@class='date'])")

    cryptonews = page(out / "outlets" / "cryptonews.html")
    assert cryptonews.xpath("string(//span[contains(@class, 'state')])") == "OK"
    bars = cryptonews.xpath("//table[@class='perday']//tr")
    assert len(bars) == 14
    per_day = {bar.xpath("string(th/time/@datetime)"): int(bar.xpath("string(td[@class='n'])")) for bar in bars}
    assert per_day["2024-06-04"] == 4 + 4  # sample_entries 2-5, story_entries 10, 20, 30, 31
    assert per_day["2024-06-05"] == 2 and per_day["2024-06-03"] == 1 and per_day["2024-05-23"] == 0
    assert len(cryptonews.xpath("//ol[@class='entries']/li")) == sum(per_day.values()) == 11
    gamma = page(out / "outlets" / "gamma.html")
    assert "Last error: timed out after 20 s" in gamma.xpath("string(//p[contains(@class, 'notice')])")


def test_outlets_are_written_again_only_when_they_change(tmp_path: Path) -> None:
    site = site_for(tmp_path)
    out = Path(site.output_dir)
    entries = site_entries()
    outlets = [healthy_outlet("cryptonews"), healthy_outlet("beta"), healthy_outlet("gamma")]
    assert render_all(ListSource(entries, outlets), site, LATER).outlets == 3
    assert render_all(ListSource(entries, outlets), site, LATER).outlets == 0
    failing = [*outlets[:2], healthy_outlet("gamma", status="error", error_count=1, last_error="HTTP 503")]
    assert render_all(ListSource(entries, failing), site, LATER).outlets == 1
    assert "HTTP 503" in (out / "outlets" / "gamma.html").read_text(encoding="utf-8")
    joined = make_entry(50, LATER - timedelta(minutes=5), "Beta reports", feed="beta", feed_title="Beta")
    assert render_all(ListSource([*entries, joined], failing), site, LATER).outlets == 1
    assert "Beta reports" in (out / "outlets" / "beta.html").read_text(encoding="utf-8")
    tomorrow = render_all(ListSource([*entries, joined], failing), site, LATER + timedelta(days=1))
    assert tomorrow.outlets == 3, "a new day moves every outlet's 14 days on"


# ------------------------------------------------------------------ end to end, with the real store


@pytest.mark.timeout(120)
def test_outlet_health_end_to_end(tmp_path: Path, feed_server: FeedServer) -> None:
    good = feed_server.add("/goodwire.xml", numbered_feed("goodwire", 5))
    broken = feed_server.add("/brokenwire.xml", b"gone for lunch", status=500)
    config = write_config(tmp_path, {"goodwire": good, "brokenwire": broken})
    out = tmp_path / "data" / "public"
    for command in (["update"], ["render"]):
        result = run_cli(*command, config=config)
        assert result.returncode == 0, result.stderr
    statuses = {feed["name"]: feed for feed in json.loads(run_cli("feeds", "--format", "json", config=config).stdout)}
    error = statuses["brokenwire"]["last_error"]
    assert error

    index = page(out / "outlets.html")
    rows = {row.get("id"): row for row in index.xpath("//ol[@class='outlets']/li")}
    assert "Failing" in rows["outlet-brokenwire"].text_content()
    assert error in rows["outlet-brokenwire"].text_content()
    assert "5 entries in 14 days" in rows["outlet-goodwire"].text_content()
    goodwire = page(out / "outlets" / "goodwire.html")
    assert goodwire.xpath("string(//span[contains(@class, 'state')])") == "OK"
    assert sum(int(cell) for cell in goodwire.xpath("//td[@class='n']/text()")) == 5
    assert len(goodwire.xpath("//ol[@class='entries']/li//a[starts-with(@href, 'https://news.example/')]")) == 5
    good_page = (out / "outlets" / "goodwire.html").read_bytes()

    feed_server.add("/brokenwire.xml", numbered_feed("brokenwire", 2))
    for command in (["update"], ["render"]):
        assert run_cli(*command, config=config).returncode == 0
    brokenwire = page(out / "outlets" / "brokenwire.html")
    assert brokenwire.xpath("string(//span[contains(@class, 'state')])") == "OK"
    assert not brokenwire.xpath("//p[contains(@class, 'notice')]"), "an old error is not shown as current"
    assert len(brokenwire.xpath("//ol[@class='entries']/li/div[@class='headline']/a")) == 2
    assert (out / "outlets" / "goodwire.html").read_bytes() == good_page, "an unchanged outlet is left alone"


# ------------------------------------------------------------------ a real browser


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class DevToolsError(RuntimeError):
    pass


class Chromium:
    """Headless Chromium driven over --remote-debugging-pipe: JSON messages ending in NUL on fds 3 and 4.

    The pages run no JavaScript of their own; the test asks the browser to measure them.
    """

    TIMEOUT = 30.0

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def wire_pipes() -> None:  # in the child, before exec: the browser expects fds 3 and 4
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        arguments = [binary, "--headless", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run"]
        arguments += ["--no-default-browser-check", "--hide-scrollbars", f"--user-data-dir={profile}"]
        if os.geteuid() == 0:
            arguments.append("--no-sandbox")  # Chromium refuses to run its sandbox as root
        self.process = subprocess.Popen(
            [*arguments, "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=wire_pipes,  # only dup2 before exec: safe despite threads
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=self.session)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self._events.append(reply)

    def wait_for(self, event: str) -> None:
        while True:
            for index, message in enumerate(self._events):
                if message.get("method") == event:
                    del self._events[: index + 1]
                    return
            self._events.append(self._read())

    def open(self, url: str, width: int, height: int, scheme: str = "light") -> None:
        """Load `url` in a window of `width` x `height` CSS pixels (a phone's when narrow)."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=self.session,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 600,
        )
        self.call(
            "Emulation.setEmulatedMedia",
            session=self.session,
            features=[{"name": "prefers-color-scheme", "value": scheme}],
        )
        self._events.clear()
        self.call("Page.navigate", session=self.session, url=url)
        self.wait_for("Page.loadEventFired")

    def measure(self) -> dict[str, Any]:
        """The page's layout: widths, anything wider than the window, the body's colours and font size."""
        expression = """(() => {
            const root = document.documentElement, width = root.clientWidth;
            const wide = [...document.body.querySelectorAll('*')].filter(element => {
                const box = element.getBoundingClientRect();
                return box.width > 0 && (box.right > width + 0.5 || box.left < -0.5);
            }).map(element => element.tagName.toLowerCase() + (element.className ? '.' + element.className : ''));
            const body = getComputedStyle(document.body);
            return {width, scrollWidth: root.scrollWidth, wide: wide.slice(0, 10),
                    background: body.backgroundColor, color: body.color, fontSize: parseFloat(body.fontSize)};
        })()"""
        reply = self.call("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True)
        value: dict[str, Any] = reply["result"]["value"]
        return value

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", session=self.session, format="png")["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        with contextlib.suppress(DevToolsError, OSError, TimeoutError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

    def _read(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.TIMEOUT
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(left, 0))
            if not ready:
                raise TimeoutError(f"Chromium said nothing for {self.TIMEOUT:.0f} s")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise DevToolsError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        result: dict[str, Any] = json.loads(message)
        return result


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    browser = Chromium(binary, tmp_path / "profile")
    try:
        yield browser
    finally:
        browser.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def luminance(css_colour: str) -> float:
    red, green, blue = (int(part) for part in re.findall(r"\d+", css_colour)[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


@pytest.mark.timeout(180)
def test_pages_fit_phone_and_desktop_in_light_and_dark(
    site: tuple[SiteConfig, Path], chromium: Chromium, tmp_path: Path
) -> None:
    _site, out = site
    shots = tmp_path / "screenshots"
    shots.mkdir()
    blank = tmp_path / "blank.html"
    blank.write_text('<!doctype html><meta name="viewport" content="width=device-width"><p>x</p>', encoding="utf-8")
    chromium.open(blank.as_uri(), *PHONE)
    blank_png = chromium.screenshot(shots / "blank.png")

    pages = ["index.html", "digest/2024-06-04.html", "tags/blockchain.html", "archive.html", "tags.html"]
    pages += ["outlets.html", "outlets/cryptonews.html", "outlets/gamma.html"]
    for name in pages:
        for width, height in (PHONE, DESKTOP):
            chromium.open((out / name).as_uri(), width, height)
            layout = chromium.measure()
            where = f"{name} at {width}px"
            assert layout["width"] == width, f"{where}: laid out {layout['width']}px wide (no viewport meta?)"
            assert layout["scrollWidth"] <= width, f"{where}: scrolls sideways to {layout['scrollWidth']}px"
            assert not layout["wide"], f"{where}: wider than the window: {layout['wide']}"
            assert layout["fontSize"] >= 16, f"{where}: body text of {layout['fontSize']}px"
            if name == "index.html":
                png = chromium.screenshot(shots / f"digest-{width}x{height}.png")
                assert png_size(png) == (width, height)
                assert len(png) > 3 * len(blank_png), f"{where}: the screenshot is nearly blank"
    light = chromium.measure()
    chromium.open((out / "index.html").as_uri(), *PHONE, scheme="dark")
    dark = chromium.measure()
    chromium.screenshot(shots / "digest-dark-390x844.png")
    assert luminance(light["background"]) > 0.9 and luminance(light["color"]) < 0.2, light
    assert luminance(dark["background"]) < 0.1 and luminance(dark["color"]) > 0.8, dark
    print(f"screenshots in {shots}")
