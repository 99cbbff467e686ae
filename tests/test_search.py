"""Search on a real SQLite file: ranking, filters, snippets, the tag tree, and the /search page
served by a real OutputServer on 127.0.0.1 (port 0).

Entries go in through Store.save_poll, as an update stores them; the texts are the tests' own.
"""

from __future__ import annotations

import gzip
import http.client
import sqlite3
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator import store_queries
from aggregator.errors import SearchQueryError
from aggregator.models import EntryData, FeedConfig, PollOutcome, SearchHit, SiteConfig, TaggedEntry
from aggregator.search_page import (
    FilterError,
    TagCount,
    find,
    hit_text,
    marked_parts,
    resolve_tag,
    search_html,
    tag_tree,
)
from aggregator.store import Store
from aggregator.store_fts import (
    MATCH_END,
    MATCH_START,
    IndexTotals,
    document_count,
    entry_size,
    index_totals,
    parse_query,
    phrase_frequencies,
)
from aggregator.web import SECURITY_HEADERS, OutputServer

NOW = datetime(2024, 5, 2, 12, 0, tzinfo=UTC)
HOSTILE_TITLE = "<script>alert('pwned')</script> Mining difficulty climbs again"
FILLER = (
    "Miners report a quieter week for hash rate",
    "A lending protocol votes on new collateral rules",
    "Wallet makers ship a firmware update",
    "A layer-2 network lowers its fees",
    "Analysts look at options expiry",
    "A payments firm pilots stablecoin settlement",
)


@dataclass(frozen=True)
class Item:
    key: str
    title: str
    text: str
    hours_ago: float
    tags: frozenset[str] = frozenset()
    link: str | None = None


ALPHA = (
    Item("office", "Binance opens a regional office in Dubai", "The exchange plans to hire local staff.", 30,
         frozenset({"Blockchain", "Blockchain/Binance"})),
    Item("reserves", "Stablecoin supply reaches a new high",
         "Analysts said Binance's reserves grew while Crypto.com trimmed its holdings.", 2,
         frozenset({"Blockchain", "Blockchain/Binance", "Blockchain/Crypto.com", "Markets"})),
    Item("staking", "Crypto.com adds staking for Solana", "Users can stake SOL from the app.", 80,
         frozenset({"Blockchain", "Blockchain/Crypto.com", "Blockchain/Solana"})),
    Item("hostile", HOSTILE_TITLE, "Difficulty <b>rose</b> & fees fell \"sharply\" at block 840000.", 5,
         frozenset({"Mining"}), link="javascript:alert(1)"),
)  # fmt: skip
BETA = (
    Item("dubai", "Binance expands in the Gulf with a Dubai hub", "The largest exchange is growing in the region.", 28,
         frozenset({"Blockchain", "Blockchain/Binance"})),
    Item("halving", "Bitcoin miners brace for the halving", "Revenue per block is set to drop by half.", 50,
         frozenset({"Blockchain", "Blockchain/Bitcoin", "Mining"})),
)  # fmt: skip


def entry_data(item: Item) -> EntryData:
    return EntryData(
        key=item.key,
        title=item.title,
        link=item.link or f"https://news.example/{item.key}",
        summary=f"<p>{item.text}</p>",
        published=NOW - timedelta(hours=item.hours_ago),
        content_hash=item.key,
        text=item.text,
    )


def poll(feed: str, items: tuple[Item, ...]) -> PollOutcome:
    return PollOutcome(
        feed=feed,
        status="ok",
        fetched_at=NOW,
        next_fetch=NOW + timedelta(minutes=15),
        feed_title=f"The {feed.title()} <Wire>",
        entries=tuple(TaggedEntry(entry_data(item), item.tags) for item in items),
    )


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "aggregator.db"
    with Store(path) as store:
        store.sync_feeds(
            [
                FeedConfig(name="alpha", url="https://alpha.example/feed"),
                FeedConfig(name="beta", url="https://b.example/"),
            ]
        )
        fillers = tuple(Item(f"filler-{n}", title, f"{title}, in brief.", 100 + n) for n, title in enumerate(FILLER))
        store.save_poll(poll("alpha", ALPHA + fillers))
        store.save_poll(poll("beta", BETA))
    return path


@pytest.fixture
def store(database: Path) -> Iterator[Store]:
    with Store(database, readonly=True) as opened:
        yield opened


def keys(hits: tuple[SearchHit, ...] | list[SearchHit]) -> list[str]:
    return [hit.entry.key for hit in hits]


# ------------------------------------------------------------------ finding


def test_title_matches_rank_above_summary_only_matches(store: Store) -> None:
    # The summary-only match is the newest of the three: rank, not recency, must put it last.
    hits = find(store, "binance").hits
    assert keys(hits)[-1] == "reserves"
    assert set(keys(hits)) == {"office", "dubai", "reserves"}
    assert [hit.rank for hit in hits] == sorted(hit.rank for hit in hits)


def test_all_plain_words_must_appear(store: Store) -> None:
    assert keys(find(store, "binance dubai").hits) in (["office", "dubai"], ["dubai", "office"])
    assert find(store, "binance halving").hits == ()
    assert find(store, "binance __").hits == find(store, "binance").hits  # "__" holds no word


@pytest.mark.parametrize(
    ("query", "expected"),
    [("Crypto.com", {"staking", "reserves"}), ("Binance's", {"reserves"}), ("crypto.com", {"staking", "reserves"})],
)
def test_words_with_dots_and_apostrophes_are_plain_words(store: Store, query: str, expected: set[str]) -> None:
    assert set(keys(find(store, query).hits)) == expected


def test_fts_syntax_passes_through(store: Store) -> None:
    assert set(keys(find(store, "halving OR Dubai").hits)) == {"halving", "office", "dubai"}
    assert keys(find(store, '"regional office"').hits) == ["office"]
    assert set(keys(find(store, "stak*").hits)) == {"staking"}
    assert keys(find(store, "title:supply").hits) == ["reserves"]
    assert find(store, "title:reserves").hits == ()


@pytest.mark.parametrize(
    "query", ["AND OR", "NOT", "title:", "nosuchcolumn:binance", '"unbalanced', "NEAR(binance", "   ", "--", "__"]
)
def test_a_query_fts5_cannot_read_is_a_search_query_error(store: Store, query: str) -> None:
    with pytest.raises(SearchQueryError):
        find(store, query)


# Entries for ranking: words repeated, long and short texts, accents, words with dots, a word in
# both columns; with the fixture's entries, every query below has several matches to order.
RANKED = (
    Item("repeat", "Binance Binance Binance", "Binance said Binance would appeal the ruling.", 40),
    Item("long", "Binance", "A long look at markets, " * 12 + "and at Binance's plans once.", 41),
    Item("bank", "Société Générale opens a crypto desk", "The bank's unit SG-Forge issues a euro coin on Solana.", 42),
    Item("dotted", "Crypto.com and crypto exchanges", "Crypto.com's app lists a coin; crypto stays volatile.", 43),
    Item("miners", "Miners sell as difficulty climbs", "Hash rate rose and miners sold coins.", 44),
    Item("adjustment", "Difficulty adjustment", "Miners, miners and more miners.", 45),
    Item("societe", "Societe Generale and the euro", "SG-Forge's euro coin reaches a new exchange.", 46),
)


@pytest.fixture
def ranked(database: Path) -> Iterator[Store]:
    with Store(database) as writer:
        writer.sync_feeds(
            [
                FeedConfig(name="alpha", url="https://alpha.example/feed"),
                FeedConfig(name="beta", url="https://b.example/"),
                FeedConfig(name="gamma", url="https://gamma.example/feed"),
            ]
        )
        writer.save_poll(poll("gamma", RANKED))
    with Store(database, readonly=True) as opened:
        yield opened


def fts5_ranks(store: Store, query: str) -> dict[int, float]:
    """FTS5's own bm25 of every entry matching `query`, by entry id."""
    rows = store.conn.execute(
        "SELECT rowid, bm25(entries_fts, 5.0, 1.0) FROM entries_fts WHERE entries_fts MATCH ?",
        (parse_query(query).match,),
    )
    return {int(entry_id): float(rank) for entry_id, rank in rows}


@pytest.mark.parametrize(
    "query",
    [
        "binance",
        "binance exchange",
        "Binance's",
        "crypto.com",
        "crypto.com crypto",  # two phrases on the same words: FTS5 highlights them as one match
        "crypto crypto",  # a word typed twice is two phrases
        "miners difficulty",
        "societe",  # matches Société too
        "Société Générale euro",
        "SG-Forge",
        "euro coin",
    ],
)
def test_plain_words_rank_as_fts5s_bm25(ranked: Store, query: str) -> None:
    # The database is far below DOCUMENT_COUNT_LIMIT, so every count is exact and the ranks are FTS5's.
    expected = fts5_ranks(ranked, query)
    hits = find(ranked, query, limit=50).hits
    assert len(hits) == len(expected) >= 2
    assert {hit.entry.id: hit.rank for hit in hits} == pytest.approx(expected, rel=1e-12)
    assert [hit.rank for hit in hits] == pytest.approx(sorted(expected.values()), rel=1e-12)


def test_fts5_syntax_is_ranked_by_fts5(ranked: Store) -> None:
    hits = find(ranked, "binance OR miners", limit=50).hits
    assert {hit.entry.id: hit.rank for hit in hits} == fts5_ranks(ranked, "binance OR miners")


def test_common_words_have_their_counts_estimated_keeping_the_order(
    ranked: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    exact = find(ranked, "binance", limit=50).hits
    monkeypatch.setattr(store_queries, "DOCUMENT_COUNT_LIMIT", 2)
    estimated = find(ranked, "binance", limit=50).hits
    # One word: its document count scales every rank alike, so the order stays FTS5's.
    assert keys(estimated) == keys(exact)
    ratios = {round(new.rank / old.rank, 9) for new, old in zip(estimated, exact, strict=True)}
    assert len(ratios) == 1 and ratios != {1.0}
    assert set(keys(find(ranked, "binance appeal", limit=50).hits)) == {"repeat"}


@pytest.mark.parametrize(
    "filters",
    [
        {"feed": "beta"},
        {"tag": "Blockchain/Binance"},
        {"since": NOW - timedelta(hours=42)},
        {"feed": "gamma", "since": NOW - timedelta(hours=44)},
        {"tag": "Blockchain", "feed": "alpha"},
    ],
    ids=["feed", "tag", "since", "feed-since", "tag-feed"],
)
@pytest.mark.parametrize("query", ["binance", "binance OR miners OR crypto*"])
def test_filters_keep_the_same_entries_checked_by_list_or_per_entry(
    ranked: Store, monkeypatch: pytest.MonkeyPatch, filters: dict[str, Any], query: str
) -> None:
    by_list = find(ranked, query, limit=50, **filters).hits  # every filter here keeps few entries
    monkeypatch.setattr(store_queries, "SELECTIVE_FILTER", 0)
    per_entry = find(ranked, query, limit=50, **filters).hits
    assert by_list and keys(by_list) == keys(per_entry)
    assert [hit.rank for hit in by_list] == [hit.rank for hit in per_entry]
    for hit in by_list:
        assert hit.entry.feed == filters.get("feed", hit.entry.feed)
        assert hit.entry.published >= filters.get("since", hit.entry.published)
        if "tag" in filters:
            assert filters["tag"] in hit.entry.tags


def test_document_count_is_exact_up_to_the_limit_then_estimated() -> None:
    totals = IndexTotals(rows=1_000_000, tokens=50_000_000)
    assert document_count(7, 12, 1_000_000, totals, limit=20_000) == 7
    assert document_count(20_000, 400_000, 1_000_000, totals, limit=20_000) == 20_000
    # 20,001 matches among the newest 25,001 entries: 80 % of the index.
    assert document_count(20_001, 975_000, 1_000_000, totals, limit=20_000) == pytest.approx(800_000, rel=1e-4)
    # Never fewer than the matches seen nor more than the entries (deleted entries leave gaps in ids).
    assert document_count(20_001, 1, 3_000_000, totals, limit=20_000) == 20_001
    assert document_count(20_001, 999_990, 1_000_000, totals, limit=20_000) == 1_000_000


def test_fts5_records_are_read_as_fts5_writes_them() -> None:
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE VIRTUAL TABLE t USING fts5(a, b)")
    texts = [("word " * 3, "word " * 200), ("word " * 130, "word " * 20_000)]  # 1-, 2- and 3-byte varints
    connection.executemany("INSERT INTO t (a, b) VALUES (?, ?)", texts)
    connection.commit()  # FTS5 writes its averages record when the transaction ends
    (averages,) = connection.execute("SELECT block FROM t_data WHERE id = 1").fetchone()
    assert index_totals(averages) == IndexTotals(rows=2, tokens=3 + 200 + 130 + 20_000)
    sizes = [entry_size(blob) for (blob,) in connection.execute("SELECT sz FROM t_docsize ORDER BY id")]
    assert sizes == [203, 20_130]


def test_phrase_frequencies_count_each_phrase_in_each_mark() -> None:
    def marked(*parts: str) -> str:
        return "".join(f"{MATCH_START}{part[1:]}{MATCH_END}" if part.startswith("=") else part for part in parts)

    title = marked("=Crypto.com", " lists ", "=crypto", " coins")
    summary = marked("The ", "=Société", " desk and ", "=Crypto.com's", " app")
    phrases = [("crypto", "com"), ("crypto",), ("societe",), ("s",)]
    # Title matches weigh 5, summary matches 1; "Crypto.com" is a match of both of its phrases.
    assert phrase_frequencies((title, summary), phrases) == [5.0 + 1.0, 10.0 + 1.0, 1.0, 1.0]
    assert phrase_frequencies((None, None), phrases) == [0.0] * 4


def test_filters(store: Store) -> None:
    assert keys(find(store, "binance", feed="beta").hits) == ["dubai"]
    assert keys(find(store, "Crypto.com", tag="Blockchain/Solana").hits) == ["staking"]
    assert keys(find(store, "Crypto.com", since=NOW - timedelta(days=1)).hits) == ["reserves"]
    assert len(find(store, "binance", limit=2).hits) == 2


def test_filters_are_read_loosely_when_nothing_matched(store: Store) -> None:
    results = find(store, "Crypto.com", tag="solana")
    assert (keys(results.hits), results.tag) == (["staking"], "Blockchain/Solana")
    results = find(store, "binance", tag="blockchain/binance", feed="BETA")
    assert (keys(results.hits), results.tag, results.feed) == (["dubai"], "Blockchain/Binance", "beta")


def test_unknown_filters_say_so(store: Store) -> None:
    with pytest.raises(FilterError, match="no feed named 'gamma'") as raised:
        find(store, "binance", feed="gamma")
    assert raised.value.option == "feed"
    with pytest.raises(FilterError, match="no entry is tagged 'Blockchain/Pepe'"):
        find(store, "binance", tag="Blockchain/Pepe")


def test_resolve_tag() -> None:
    in_use = ["Blockchain", "Blockchain/Binance", "Regulation", "Regulation/SEC", "Security", "Other/SEC"]
    assert resolve_tag("Blockchain/Binance", in_use) == "Blockchain/Binance"
    assert resolve_tag("blockchain/binance", in_use) == "Blockchain/Binance"
    assert resolve_tag("BINANCE", in_use) == "Blockchain/Binance"
    assert resolve_tag("security", in_use) == "Security"
    with pytest.raises(FilterError, match="'sec' could be Other/SEC, Regulation/SEC"):
        resolve_tag("sec", in_use)
    with pytest.raises(FilterError, match="no entry is tagged 'Pepe'"):
        resolve_tag("Pepe", in_use)


# ------------------------------------------------------------------ snippets and the tag tree


def test_marked_parts_remove_marks_and_controls() -> None:
    text = f"before {MATCH_START}Binance{MATCH_END} after\x1b[2J {MATCH_START}again{MATCH_END}"
    assert marked_parts(text) == (("before ", False), ("Binance", True), (" after [2J ", False), ("again", True))
    assert marked_parts("") == ()


def test_snippets_mark_the_matches(store: Store) -> None:
    (hit,) = find(store, "Binance's").hits
    shown = hit_text(hit)
    assert shown.title == (("Stablecoin supply reaches a new high", False),)
    assert ("Binance's", True) in shown.snippet


def test_a_title_only_match_marks_the_title_and_shows_the_summary(store: Store) -> None:
    (hit,) = find(store, "regional").hits
    shown = hit_text(hit)
    assert ("regional", True) in shown.title
    assert shown.snippet == (("The exchange plans to hire local staff.", False),)


def test_tag_tree_orders_children_by_count_then_name() -> None:
    tree = tag_tree(
        [
            ("Blockchain", 5),
            ("Blockchain/Binance", 2),
            ("Blockchain/Bitcoin", 3),
            ("Blockchain/Aave", 2),
            ("Markets", 7),
            ("Regulation/SEC", 1),
        ]
    )
    assert [(node.path, node.count, node.depth) for node in tree] == [
        ("Markets", 7, 0),
        ("Blockchain", 5, 0),
        ("Blockchain/Bitcoin", 3, 1),
        ("Blockchain/Aave", 2, 1),
        ("Blockchain/Binance", 2, 1),
        ("Regulation", 0, 0),
        ("Regulation/SEC", 1, 1),
    ]
    assert TagCount("Blockchain/Crypto.com", 1).name == "Crypto.com"


def test_tags_in_use_make_a_tree(store: Store) -> None:
    tree = tag_tree(store.tags_in_use())
    assert tree[0] == TagCount("Blockchain", 5)
    assert tree[1] == TagCount("Blockchain/Binance", 3)
    assert [node.path for node in tree if node.depth == 0] == ["Blockchain", "Mining", "Markets"]


# ------------------------------------------------------------------ the page


@dataclass
class Page:
    status: int
    headers: http.client.HTTPMessage
    body: str


def get(server: OutputServer, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> Page:
    host, port = server.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        answer = connection.getresponse()
        raw = answer.read()
    finally:
        connection.close()
    if answer.headers.get("Content-Encoding") == "gzip":
        raw = gzip.decompress(raw)
    return Page(answer.status, answer.headers, raw.decode("utf-8"))


def search_url(**fields: str) -> str:
    return "/search?" + urllib.parse.urlencode(fields)


@pytest.fixture
def server(tmp_path: Path, database: Path) -> Iterator[OutputServer]:
    public = tmp_path / "public"
    public.mkdir()
    (public / "index.html").write_text("<!doctype html><title>Digest</title>", encoding="utf-8")
    site = SiteConfig(title="Chain <Digest>", site_url="http://127.0.0.1/", output_dir=str(public))
    output_server = OutputServer(public, port=0, database=database, site=site)
    output_server.start()
    yield output_server
    output_server.shutdown()


def test_page_lists_hits_with_links_feeds_dates_tags_and_marked_snippets(server: OutputServer) -> None:
    page = get(server, search_url(q="Binance's"))
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value
    assert "1 result for <q>Binance&#39;s</q>" in page.body
    assert '<a href="https://news.example/reserves">Stablecoin supply reaches a new high</a>' in page.body
    assert "<mark>Binance&#39;s</mark>" in page.body
    assert "The Alpha &lt;Wire&gt;" in page.body and "<Wire>" not in page.body
    assert '<time datetime="2024-05-02T10:00:00Z">2024-05-02 10:00</time>' in page.body
    assert 'href="search?q=Binance%27s&amp;tag=Blockchain%2FCrypto.com"' in page.body
    assert 'href="search?q=Binance%27s&amp;feed=alpha"' in page.body
    assert '<form class="search" method="get" action="search"' in page.body
    assert "Chain &lt;Digest&gt;" in page.body


def test_page_escapes_a_hostile_title_summary_and_query(server: OutputServer) -> None:
    page = get(server, search_url(q="mining difficulty"))
    assert page.status == 200
    assert "<script" not in page.body
    escaped_title = "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; <mark>Mining</mark> <mark>difficulty</mark>"
    assert f'<div class="headline">{escaped_title} climbs again</div>' in page.body  # unlinked: javascript:
    assert "javascript:" not in page.body
    hostile_summary = get(server, search_url(q="sharply"))
    assert "&lt;b&gt;rose&lt;/b&gt; &amp; fees fell &#34;<mark>sharply</mark>&#34;" in hostile_summary.body
    echoed = get(server, search_url(q='"><script>alert(2)</script>'))
    assert "<script>alert(2)" not in echoed.body
    assert 'value="&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"' in echoed.body


@pytest.mark.parametrize("query", ["AND OR", "title:", "NEAR(binance", '"unbalanced'])
def test_a_malformed_query_is_a_400_page_with_the_reason(server: OutputServer, query: str) -> None:
    page = get(server, search_url(q=query))
    assert page.status == 400
    assert "cannot read the search query" in page.body
    assert 'role="alert"' in page.body and "Traceback" not in page.body
    assert '<form class="search"' in page.body


def test_filters_and_limit_on_the_page(server: OutputServer) -> None:
    assert get(server, search_url(q="binance", feed="beta")).body.count('class="headline"') == 1
    tagged = get(server, search_url(q="Crypto.com", tag="solana"))
    assert tagged.body.count('class="headline"') == 1 and 'value="Blockchain/Solana"' in tagged.body
    limited = get(server, search_url(q="binance", limit="2"))
    assert limited.body.count('class="headline"') == 2 and "The best 2 results" in limited.body
    assert 'name="limit" value="2"' in limited.body
    assert get(server, search_url(q="binance", limit="many")).status == 400
    unknown = get(server, search_url(q="binance", tag="Pepe"))
    assert unknown.status == 400 and "no entry is tagged &#39;Pepe&#39;" in unknown.body


def test_no_query_shows_the_form_and_no_match_says_so(server: OutputServer) -> None:
    empty = get(server, "/search")
    assert empty.status == 200 and '<input type="search" name="q" value=""' in empty.body
    assert 'class="headline"' not in empty.body
    nothing = get(server, search_url(q="zebra"))
    assert nothing.status == 200 and "Nothing matches <q>zebra</q>" in nothing.body


def test_head_gzip_and_the_static_files_beside_it(server: OutputServer) -> None:
    head = get(server, search_url(q="binance"), method="HEAD")
    assert head.status == 200 and head.body == "" and int(head.headers["Content-Length"]) > 0
    packed = get(server, search_url(q="binance"), headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip" and "<mark>Binance</mark>" in packed.body
    assert get(server, "/").status == 200
    assert get(server, "/search/").status == 404


def test_a_missing_database_is_a_503_that_names_no_path(tmp_path: Path) -> None:
    missing = tmp_path / "secret-place" / "aggregator.db"
    output_server = OutputServer(tmp_path, port=0, database=missing)
    output_server.start()
    try:
        page = get(output_server, search_url(q="binance"))
    finally:
        output_server.shutdown()
    assert page.status == 503
    assert "not available" in page.body and "secret-place" not in page.body


def test_search_html_renders_without_a_server() -> None:
    site = SiteConfig(title="Digest", site_url="http://127.0.0.1/", output_dir=".")
    body = search_html(site, query="bitcoin", error="Something <odd>").decode("utf-8")
    assert "Something &lt;odd&gt;" in body and "<odd>" not in body
