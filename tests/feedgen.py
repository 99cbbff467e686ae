"""Build small RSS documents in the tests' own words, for servers that change what they serve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from xml.sax.saxutils import escape

TOPICS = (
    "Bitcoin miners expand capacity in a new region",
    "An exchange lists a token after a community vote",
    "Developers publish a roadmap for a layer-2 network",
    "A stablecoin issuer releases its monthly attestation",
    "Regulators open a consultation on digital asset custody",
)


def rss(title: str, items: list[tuple[str, str, datetime]], extra_channel: str = "") -> bytes:
    """An RSS 2.0 document; `items` are (guid, title, published)."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<rss version="2.0"><channel>',
        f"<title>{escape(title)}</title><link>https://{title.lower().replace(' ', '-')}.example/</link>",
        f"<description>Fixture feed {escape(title)}</description>{extra_channel}",
    ]
    for guid, headline, published in items:
        parts.append(
            f'<item><title>{escape(headline)}</title><guid isPermaLink="false">{escape(guid)}</guid>'
            f"<link>https://news.example/{escape(guid)}</link>"
            f"<pubDate>{format_datetime(published.astimezone(UTC), usegmt=True)}</pubDate>"
            f"<description>{escape(headline)}: a short summary written for the tests.</description></item>"
        )
    parts.append("</channel></rss>")
    return "\n".join(parts).encode("utf-8")


def numbered_feed(name: str, count: int, now: datetime | None = None) -> bytes:
    """A feed `name` with `count` distinct items, one minute apart, newest first."""
    start = now or datetime.now(UTC)
    items = [
        (f"{name}-{index}", f"{TOPICS[index % len(TOPICS)]} ({name} #{index})", start - timedelta(minutes=index))
        for index in range(count)
    ]
    return rss(name, items)
