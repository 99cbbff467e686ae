"""Tests for aggregator.tagging: the data-driven cases in tests/data/tagging/ plus the API's units.

Adding a tagging case is adding an entry to a YAML file in tests/data/tagging/; a file's
optional `extra:` section extends the taxonomy the way feeds.yaml `tags:` does.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from aggregator.models import TagRule
from aggregator.tagging import Taxonomy, normalize_tag, rollup, rules_from_mapping

DATA = Path(__file__).parent / "data" / "tagging"
LABELED_PREFIX = "labeled-"  # the labeled sets scored by tests/test_tag_quality.py, not exact cases


def _load_cases() -> list[Any]:
    params = []
    for path in sorted(DATA.glob("*.yaml")):
        if path.name.startswith(LABELED_PREFIX):
            continue
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        extra = rules_from_mapping(document.get("extra") or {}, where=f"{path.name}: extra")
        for case in document["cases"]:
            params.append(pytest.param(extra, case, id=f"{path.stem}:{case['name']}"))
    return params


_TAXONOMIES: dict[tuple[TagRule, ...], Taxonomy] = {}


def _taxonomy(extra: tuple[TagRule, ...] = ()) -> Taxonomy:
    if extra not in _TAXONOMIES:
        _TAXONOMIES[extra] = Taxonomy.load(extra)
    return _TAXONOMIES[extra]


@pytest.mark.parametrize(("extra", "case"), _load_cases())
def test_case(extra: tuple[TagRule, ...], case: dict[str, Any]) -> None:
    tags = _taxonomy(extra).tags_for(
        case["title"],
        case.get("summary", ""),
        case.get("categories", []),
        case.get("feed_tags", []),
    )
    expected = frozenset(case["expected"])
    assert tags == expected, (
        f"\n  title:      {case['title']!r}"
        f"\n  categories: {case.get('categories', [])}"
        f"\n  expected:   {sorted(expected)}"
        f"\n  got:        {sorted(tags)}"
        f"\n  missing:    {sorted(expected - tags)}"
        f"\n  unexpected: {sorted(tags - expected)}"
    )


def test_data_files_have_enough_cases() -> None:
    assert len(_load_cases()) >= 60


# --- rollup and normalize_tag ----------------------------------------------------------------


def test_rollup_adds_every_parent() -> None:
    assert rollup(["A/B/C"]) == {"A", "A/B", "A/B/C"}
    assert rollup(["Blockchain/Bitcoin", "Security", "Blockchain/Ethereum"]) == {
        "Blockchain",
        "Blockchain/Bitcoin",
        "Blockchain/Ethereum",
        "Security",
    }
    assert rollup([]) == frozenset()


@given(st.lists(st.lists(st.text(alphabet="abc", max_size=3), min_size=1, max_size=4)))
def test_rollup_is_every_path_prefix_and_idempotent(paths: list[list[str]]) -> None:
    rolled = rollup("/".join(segments) for segments in paths)
    assert rolled == {"/".join(segments[:depth]) for segments in paths for depth in range(1, len(segments) + 1)}
    assert rollup(rolled) == rolled


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Blockchain/Bitcoin", "Blockchain/Bitcoin"),
        ("  Blockchain / Bitcoin  ", "Blockchain/Bitcoin"),
        ("Regulation/Hong   Kong\tSFC", "Regulation/Hong Kong SFC"),
        ("Markets", "Markets"),
    ],
)
def test_normalize_tag(raw: str, normalized: str) -> None:
    assert normalize_tag(raw) == normalized


@pytest.mark.parametrize("raw", ["", "   ", "A//B", "A/", "/A", "A/ /B"])
def test_normalize_tag_rejects_empty_segments(raw: str) -> None:
    with pytest.raises(ValueError, match="empty path segment"):
        normalize_tag(raw)


# --- the built-in taxonomy -------------------------------------------------------------------

# The nodes DESIGN.md ("Tags") promises in the built-in taxonomy.
DESIGN_ENTITIES = (
    "Bitcoin Ethereum Solana XRP Cardano Dogecoin Polkadot Polygon Avalanche Chainlink Litecoin Tron "
    "Toncoin Tether USDC Binance Coinbase FTX Kraken OKX Bybit Gemini Bitfinex KuCoin Crypto.com Huobi "
    "MicroStrategy Grayscale Celsius Terra Uniswap Arbitrum Optimism"
)
DESIGN_TOPICS = "Markets Regulation Security DeFi NFT Mining ETF CBDC"
REQUIRED_PATHS = [
    "Blockchain",
    *(f"Blockchain/{entity}" for entity in DESIGN_ENTITIES.split()),
    "Regulation/SEC",
    "Regulation/CFTC",
    *DESIGN_TOPICS.split(),
]


def test_builtin_taxonomy_has_every_node_of_the_design() -> None:
    paths = set(Taxonomy.load().paths)
    assert [path for path in REQUIRED_PATHS if path not in paths] == []


def test_paths_are_sorted_and_include_parents() -> None:
    paths = Taxonomy.load().paths
    assert list(paths) == sorted(paths)
    assert set(rollup(paths)) == set(paths)


def test_taxonomy_file_ships_as_package_data() -> None:
    assert resources.files("aggregator").joinpath("taxonomy.yaml").is_file()


@pytest.mark.parametrize(
    ("category", "tag"),
    [
        ("Bitcoin News", "Blockchain/Bitcoin"),
        ("Ethereum News", "Blockchain/Ethereum"),
        ("XRP News", "Blockchain/XRP"),
        ("Altcoins", "Blockchain"),
        ("Altcoin News", "Blockchain"),
        ("Blockchain", "Blockchain"),
        ("Web3", "Blockchain"),
        ("Cryptocurrency News", "Blockchain"),
        ("DeFi", "DeFi"),
        ("DeFi News", "DeFi"),
        ("NFTs", "NFT"),
        ("Regulation", "Regulation"),
        ("Policy", "Regulation"),
        ("Legal", "Regulation"),
        ("Hacks", "Security"),
        ("Security", "Security"),
        ("Market News", "Markets"),
        ("Markets", "Markets"),
        ("Price Analysis", "Markets"),
        ("Trading", "Markets"),
        ("Mining", "Mining"),
        ("Bitcoin Mining", "Mining"),
        ("CBDC", "CBDC"),
        ("Bitcoin ETF", "ETF"),
        ("SEC", "Regulation/SEC"),
        ("CFTC", "Regulation/CFTC"),
        ("Sam Bankman-Fried", "Blockchain/FTX"),
        ("John J. Ray III", "Blockchain/FTX"),
        ("Changpeng Zhao (CZ)", "Blockchain/Binance"),
        ("Ripple", "Blockchain/XRP"),
        ("Strategy", "Blockchain/MicroStrategy"),
    ],
)
def test_outlet_categories_map_to_nodes(category: str, tag: str) -> None:
    # The summary makes the entry about crypto, as it is at a crypto outlet.
    tags = Taxonomy.load().tags_for("Daily roundup", "Notes on crypto.", [category])
    assert tag in tags, f"category {category!r} gave {sorted(tags)}"


# --- extending the taxonomy ------------------------------------------------------------------


def test_extra_rule_adds_a_node() -> None:
    taxonomy = Taxonomy.load([TagRule("Blockchain/Pepe", names=("Pepe coin",), tickers=("PEPE",))])
    assert "Blockchain/Pepe" in taxonomy.paths
    assert taxonomy.tags_for("PEPE doubles", "", []) == {"Blockchain", "Blockchain/Pepe"}


def test_extra_rule_for_an_existing_path_adds_to_it() -> None:
    builtin = Taxonomy.load()
    extended = Taxonomy.load(
        [TagRule("blockchain/binance", names=("Binance Square",), aliases=("BNB Daily",), tickers=("BSC",))]
    )
    assert extended.paths == builtin.paths
    assert extended.tags_for("Notes", "", ["BNB Daily"]) == {"Blockchain", "Blockchain/Binance"}
    assert extended.tags_for("BSC fees fall", "", []) == {"Blockchain", "Blockchain/Binance"}
    # The node's built-in names still work.
    assert extended.tags_for("Binance lists a new pair", "", []) == {"Blockchain", "Blockchain/Binance"}


def test_extra_rule_with_context() -> None:
    taxonomy = Taxonomy.load([TagRule("Blockchain/Sui", names=("Sui",), needs_context=True)])
    assert taxonomy.tags_for("Sui Generis opens a gallery", "", []) == frozenset()
    assert taxonomy.tags_for("Sui network halts block production", "", ["Crypto"]) == {
        "Blockchain",
        "Blockchain/Sui",
    }


@pytest.mark.parametrize("name", ["$PEPE", "-dash", "trailing-"])
def test_extra_rule_with_a_bad_name_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="must start and end"):
        Taxonomy.load([TagRule("Blockchain/X", names=(name,))])


def test_extra_rule_ignores_blank_names_and_takes_tickers_in_any_case() -> None:
    taxonomy = Taxonomy.load([TagRule("Blockchain/X", names=("  ",), tickers=("$xyz",))])
    assert taxonomy.tags_for("XYZ lists on a new venue", "", []) == {"Blockchain", "Blockchain/X"}


def test_extra_rule_with_an_empty_path_segment_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty path segment"):
        Taxonomy.load([TagRule("Blockchain//X", names=("X Coin",))])


# --- rules_from_mapping: the YAML schema -----------------------------------------------------


def test_rules_from_mapping_splits_a_needs_context_list() -> None:
    rules = rules_from_mapping(
        {"Blockchain/Kraken": {"names": ["Kraken", "Payward"], "tickers": ["KRAK"], "needs_context": ["Kraken"]}}
    )
    assert rules == (
        TagRule("Blockchain/Kraken", names=("Payward",), tickers=("KRAK",)),
        TagRule("Blockchain/Kraken", names=("Kraken",), needs_context=True),
    )


def test_rules_from_mapping_accepts_a_boolean_and_empty_nodes() -> None:
    rules = rules_from_mapping({"Topic": {"names": ["thing"], "needs_context": True}, "Other": None})
    assert rules == (TagRule("Topic", names=("thing",), needs_context=True), TagRule("Other"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"A": {"name": ["x"]}}, r"tags\.A: unknown key 'name'"),
        ({"A": {"names": "Bitcoin"}}, r"tags\.A\.names: expected a list of strings"),
        ({"A": {"tickers": [1]}}, r"tags\.A\.tickers: every item must be a non-empty string"),
        ({"A": {"names": ["x"], "needs_context": ["y"]}}, r"tags\.A\.needs_context: 'y' is not one"),
        ({"A": ["x"]}, r"tags\.A: expected a mapping"),
        ({"A//B": {}}, "empty path segment"),
    ],
)
def test_rules_from_mapping_names_the_bad_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules_from_mapping(data)


# --- robustness, speed, purity ---------------------------------------------------------------


@given(st.text(max_size=200), st.text(max_size=300), st.lists(st.text(max_size=30), max_size=4))
def test_any_text_gives_a_rolled_up_tag_set(title: str, summary: str, categories: list[str]) -> None:
    tags = _taxonomy().tags_for(title, summary, categories)
    assert rollup(tags) == tags
    assert tags <= set(_taxonomy().paths)


def test_tagging_ten_thousand_entries_runs_through() -> None:
    taxonomy = Taxonomy.load()
    cases = [param.values[1] for param in _load_cases()]
    filler = (
        " <p>Analysts said volumes were thin &amp; most desks expect a calmer week, while the "
        "report also covered payments, custody and a conference in Lisbon.</p>"
    )
    entries = [
        (case["title"], case.get("summary", "") + filler, case.get("categories", []))
        for case in (cases * (10_000 // len(cases) + 1))[:10_000]
    ]
    # Speed is measured in bench/, not here: this only proves a large batch runs through.
    tagged = [taxonomy.tags_for(title, summary, categories) for title, summary, categories in entries]
    assert len(tagged) == 10_000


def test_tagging_imports_no_pipeline_libraries() -> None:
    code = (
        "import sys, aggregator.tagging; "
        "print(sorted(m for m in ('feedparser', 'nh3', 'httpx', 'sqlite_utils', 'jinja2') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_real_outlet_entries_are_tagged(corpus_dir: Path) -> None:
    feedparser = pytest.importorskip("feedparser")
    taxonomy = Taxonomy.load()
    crypto = tagged = 0
    general_crypto_tags: list[tuple[str, frozenset[str]]] = []
    for path in sorted(corpus_dir.glob("*/*.xml")):
        feed = feedparser.parse(path.read_bytes())
        for entry in feed.entries:
            categories = [tag.get("term") or "" for tag in entry.get("tags", [])]
            tags = taxonomy.tags_for(entry.get("title", ""), entry.get("summary", ""), categories)
            if path.parent.name.startswith("general-"):
                if "Blockchain" in tags:
                    general_crypto_tags.append((entry.get("title", ""), tags))
            else:
                crypto += 1
                tagged += bool(tags)
    assert crypto > 0
    assert tagged / crypto > 0.9, f"only {tagged} of {crypto} crypto entries got a tag"
    assert general_crypto_tags == []


# --- feeds.yaml overriding the built-in taxonomy ------------------------------------------------


def test_a_replace_rule_takes_the_place_of_the_builtin_node() -> None:
    title = "Kraken exchange halts deposits of bitcoin"
    assert "Blockchain/Kraken" in Taxonomy.load().tags_for(title, "", [], [])
    switched_off = Taxonomy.load(rules_from_mapping({"blockchain/kraken": {"replace": True}}))
    assert "Blockchain/Kraken" not in switched_off.tags_for(title, "", [], [])
    narrowed = Taxonomy.load(rules_from_mapping({"Blockchain/Kraken": {"names": ["Kraken Pro"], "replace": True}}))
    assert "Blockchain/Kraken" not in narrowed.tags_for(title, "", [], [])
    assert "Blockchain/Kraken" in narrowed.tags_for("Kraken Pro adds a bitcoin order type", "", [], [])
    extended = Taxonomy.load(rules_from_mapping({"Blockchain/Kraken": {"names": ["Payward"]}}))
    assert "Blockchain/Kraken" in extended.tags_for(title, "", [], [])
    assert "Blockchain/Kraken" in extended.tags_for("Payward files its annual report", "", [], [])


def test_replace_must_be_a_boolean() -> None:
    with pytest.raises(ValueError, match=r"tags\.Blockchain/Kraken\.replace"):
        rules_from_mapping({"Blockchain/Kraken": {"replace": "yes"}})
