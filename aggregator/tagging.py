"""Tags for entries: the taxonomy (built in, extended from feeds.yaml) and the matching rules.

A tag is a path (`Blockchain/Binance`); an entry tagged `A/B` is also tagged `A`. An entry's
tags come from three sources, merged: the feed's own `tags` from the config; the entry's
categories when they name a taxonomy node or one of its aliases ("Bitcoin News"); and the
taxonomy's names and tickers found in the title, summary and categories (never the full
article body, which mentions everything in passing).

Matching, in short:
- names match case-insensitively as whole words ("Binance's", "Binance-backed", not
  "Binancecoin"); a space in a name matches spaces or a hyphen, a hyphen matches a hyphen or
  nothing; the longest name wins, and carries the meaning of the names inside it;
- tickers match only as written in capitals (`SOL`, `BTCUSDT`) or after `$` (`$link`);
  tickers that are also ordinary words (LINK, SOL, DOT, OP, ...) need crypto context, and in
  an ALL-CAPS title or summary they need the `$`;
- names and tickers marked `needs_context` count only when the entry is otherwise clearly
  about crypto: a name or ticker under a crypto root (CRYPTO_ROOTS) that needs no context, a
  word of CONTEXT_WORDS, a crypto category or feed tag. Such a name written with a capital in
  the taxonomy ("Kraken", "Strategy") must also be capitalized in the text, and everyday
  phrases ("ripple effect", "41 degrees Celsius", "Google's Gemini", "SEC title") never count;
- a possessive inside a multi-word name still matches it ("Polygon's zkEVM");
- the Markets topic is also found by the shape of a price move ("slides 6%", "tops $105,000",
  "TRX climbs after ..."), in English, German and Spanish; like every topic it needs crypto
  context.

Everything is compiled once per taxonomy into a few combined regular expressions, so tagging
an entry costs a handful of regex scans. This module is pure: it reads only its own package
data file and knows nothing of feeds, HTTP or SQLite.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from typing import Any

import yaml

from aggregator.models import TagRule
from aggregator.tagging_moves import (
    COIN_ROOT,
    FIGURE_AFTER_KIND,
    MARKETS_TAG,
    MOVE_KINDS,
    PAUSE_AFTER,
    PLURAL_SUBJECTS,
    SUBJECT_NOUNS,
)

TAXONOMY_RESOURCE = "taxonomy.yaml"

# Tags under these roots mean the entry is about crypto, which lets needs-context names count.
# (ETF is among them because only its crypto names need no context: "spot bitcoin ETF", IBIT.)
CRYPTO_ROOTS = frozenset({"Blockchain", "DeFi", "NFT", "Mining", "ETF"})

# Words that make an entry about crypto without being tags of their own.
CONTEXT_WORDS = (
    "token",
    "tokens",
    "tokenized",
    "tokenised",
    "tokenization",
    "tokenisation",
    "airdrop",
    "airdrops",
    "staking",
    "on-chain",
    "onchain",
    "smart contract",
    "smart contracts",
    "hodl",
    "satoshis",
)

# Tickers that are also ordinary words or common abbreviations (English, Spanish, German:
# "U.S. DOT", the German "OP", a company's CRO). Written in capitals they count only with
# crypto context, and in an ALL-CAPS title or summary not at all; with a `$` ("$LINK") or as a
# trading pair ("LINKUSDT") they always count.
_ORDINARY_WORDS = (
    "ACE ADA AI ALPHA APE ARB ARK ATOM BAT BEAM BOND CAKE CAT COIN COMP CRO DOG DOGE DOT EDU FLOW FORM "
    "FUN GAS GOLD HIGH HOOK HOT ID IN IO JOE KEEP LINK LOOKS LUNA MAGIC MANA MASK ME MEME MOVE NEAR "
    "NOT OM ONE OP PEOPLE POND PUMP RAY ROSE RUNE SAFE SAND SOL SOUL STEP SUN SUPER TIME TON TRUMP "
    "UNI WIN"
)
ORDINARY_WORD_TICKERS = frozenset(_ORDINARY_WORDS.split())

# Words after which "Strategy" can still be the company ("Coinbase and Strategy", "Bitcoin
# giant Strategy"); after any other word it is the common noun ("trading strategy").
_STRATEGY_LEADS = (
    "and or by from with at of on as than like while after before says said for to in into including "
    "between about against versus vs giant firm company holder buyer rival"
)

# Everyday uses of names and tickers, by the word they contain: inside these phrases the word
# does not count ("ripple effect", "41 degrees Celsius", "Google's Gemini", "chainlink fence",
# the college sports "SEC title", "ETH Zurich" the university, "sell tax" of a token).
_EVERYDAY_PHRASES: dict[str, re.Pattern[str]] = {
    word: re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", re.IGNORECASE)
    for words, pattern in (
        ("ripple", r"ripple[\s-]+effects?|ripples?\s+(?:through|across)|sent\s+ripples"),
        (
            "circle",
            r"(?:full|inner|vicious|virtuous|arctic)\s+circle|circle\s+back|winner['’]?s\s+circle|"
            r"circle\s+of\s+(?:life|friends|trust)",
        ),
        ("celsius", r"degrees?\s+celsius|\d+(?:[.,]\d+)?\s*(?:°|º)?\s*celsius|celsius\s+(?:scale|degrees?)"),
        (
            "strategy",
            rf"(?<![\w'’])(?!(?:{'|'.join(_STRATEGY_LEADS.split())})\s)\w+(?:[-‐]\w+)*\s+strategy|"
            r"strategy\s+(?:for|of)",
        ),
        ("avalanche", r"an?\s+avalanche|avalanche\s+of|avalanche\s+(?:warnings?|risk|danger|season)"),
        (
            "gemini",
            r"google['’]?s?\s+gemini|gemini\s+(?:ai|models?|chatbot|assistant|app|pro|ultra|nano|flash|"
            r"advanced|live|\d+(?:\.\d+)?)",
        ),
        ("kraken", r"release\s+the\s+kraken"),
        ("tron", r"tron:?\s+(?:legacy|ares|uprising)"),
        ("terra", r"terra\s+(?:firma|incognita|nova|nullius)"),
        ("ether", r"into\s+the\s+ether|(?:diethyl|dimethyl)\s+ether"),
        ("mining miner miners", r"(?:gold|coal|copper|lithium|data|text|process|liquidity)\s+min(?:ing|ers?)"),
        ("price prices", r"gas\s+prices?|price\s+(?:feeds?|oracles?|alerts?)"),
        ("tax taxes", r"tax\s+(?:reports?|software|tools?|calculators?)|(?:buy|sell|transfer)\s+tax(?:es)?"),
        ("hack hacks", r"(?:life|growth|productivity)\s+hacks?"),
        (
            "licence licences license licenses",
            r"(?:open[\s-]source|software|business\s+source|mit|gpl|apache|creative\s+commons)\s+licen[cs]es?",
        ),
        ("chainlink", r"chain[\s-]?link\s+(?:fences?|fencing|gates?)"),
        ("exploit exploits exploited", r"(?:traders|arbitrageurs|investors|bots)\s+exploit(?:s|ed)?"),
        (
            "liquidation",
            r"liquidation\s+(?:plan|proceedings?|process|order|estate)|(?:in|into)\s+liquidation|"
            r"(?:provisional|voluntary|court[\s-]ordered)\s+liquidation",
        ),
        ("law", r"(?:moore|metcalfe|murphy|parkinson|goodhart|gresham|newton)['’]?s\s+law"),
        (
            "trial",
            r"(?:free|pilot|clinical|field|user|beta|cbdc|payments?|live|successful|first)\s+trials?|"
            r"trial\s+(?:run|period|phase|version|of\s+(?:the\s+)?(?:cbdc|digital|tokeni[sz]ed))",
        ),
        ("steal steals stole stealing", r"st(?:eal(?:s|ing)?|ole)\s+the\s+(?:show|spotlight|limelight)"),
        (
            "sec",
            r"sec\s+(?:title|championships?|tournament|football|basketball|baseball|softball|soccer|volleyball|"
            r"gymnastics|play|opener|games?|media\s+days|schools?|teams?|coach(?:es)?|rivals?|foes?|west|east|"
            r"network|champions?|schedule|standings)",
        ),
        ("eth", r"eth\s+(?:zurich|zürich|zuerich|lausanne)"),
    )
    for word in words.split()
}
_PHRASE_REACH = 40  # characters on each side of a name that an everyday phrase may span

# Quote currencies of trading pairs written together with the ticker (BTCUSDT, ETHBTC).
_PAIR_QUOTES = ("USDT", "USDC", "BUSD", "USD", "EUR", "GBP", "JPY", "KRW", "BTC", "ETH")
_PAIR_LABEL = re.compile(r"^([a-z0-9]+?)(?:" + "|".join(q.lower() for q in _PAIR_QUOTES) + r")$")

_POSSESSIVE = re.compile(r"['’]s(?=[\s\-‐‑–])")  # "Polygon's zkEVM" is the name "Polygon zkEVM"
_MARKUP = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SEPARATORS = re.compile(r"[\s\-‐‑–]+")
_WORD_EDGE = re.compile(r"^\w(?:.*\w)?$", re.DOTALL)

# A rule node's keys, as written in taxonomy.yaml and in feeds.yaml `tags:`.
RULE_KEYS = ("names", "tickers", "aliases", "needs_context", "replace")


def normalize_tag(tag: str) -> str:
    """Return `tag` with each path segment trimmed and inner spaces collapsed.

    Raises ValueError when a segment is empty ("", "A//B", "A/").
    """
    segments = [" ".join(segment.split()) for segment in tag.split("/")]
    if any(not segment for segment in segments):
        raise ValueError(f"tag {tag!r} has an empty path segment")
    return "/".join(segments)


def rollup(tags: Iterable[str]) -> frozenset[str]:
    """Return the tags with every parent path added: "A/B/C" -> {"A", "A/B", "A/B/C"}."""
    rolled: set[str] = set()
    for tag in tags:
        # Up the path, until a tag that is in already (and so are its parents) or the root.
        while tag not in rolled:
            rolled.add(tag)
            parent_end = tag.rfind("/")
            if parent_end < 0:
                break
            tag = tag[:parent_end]
    return frozenset(rolled)


def rules_from_mapping(data: Mapping[str, object], where: str = "tags") -> tuple[TagRule, ...]:
    """Turn a taxonomy mapping (taxonomy.yaml, or feeds.yaml `tags:`) into TagRules.

    Each key is a tag path; each value a mapping with the optional keys of RULE_KEYS. A
    `needs_context` list splits the node into two rules with the same path: one for the
    listed names/tickers (needs_context=True), one for the rest. Raises ValueError naming
    the offending key (`tags.Blockchain/Pepe.names`).
    """
    rules: list[TagRule] = []
    for raw_path, node in data.items():
        key = f"{where}.{raw_path}"
        if not isinstance(raw_path, str):
            raise ValueError(f"{key}: a tag path must be a string")
        path = normalize_tag(raw_path)
        if node is None:
            node = {}
        if not isinstance(node, Mapping):
            raise ValueError(f"{key}: expected a mapping with keys {', '.join(RULE_KEYS)}")
        unknown = sorted(str(name) for name in node if name not in RULE_KEYS)
        if unknown:
            raise ValueError(f"{key}: unknown key {unknown[0]!r} (expected one of {', '.join(RULE_KEYS)})")
        names = _string_list(node.get("names"), f"{key}.names")
        tickers = _string_list(node.get("tickers"), f"{key}.tickers")
        aliases = _string_list(node.get("aliases"), f"{key}.aliases")
        context = node.get("needs_context", False)
        if not isinstance(context, bool):
            context = _string_list(context, f"{key}.needs_context")
        replace = node.get("replace", False)
        if not isinstance(replace, bool):
            raise ValueError(f"{key}.replace: expected true or false")
        try:
            rules.extend(TagRule.from_spec(path, names, tickers, aliases, context, replace))
        except ValueError as error:
            raise ValueError(f"{key}.{error}") from None
    return tuple(rules)


def _string_list(value: object, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list):
        raise ValueError(f"{key}: expected a list of strings")
    if not all(isinstance(item, str) and item.strip() for item in value):
        raise ValueError(f"{key}: every item must be a non-empty string")
    return tuple(item.strip() for item in value)


# libyaml's safe loader where PyYAML has it: ten times faster than the pure-Python one.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@lru_cache(maxsize=1)
def _builtin_rules() -> tuple[TagRule, ...]:
    text = resources.files("aggregator").joinpath(TAXONOMY_RESOURCE).read_text(encoding="utf-8")
    data = yaml.load(text, Loader=_YAML_LOADER)
    if not isinstance(data, dict):
        raise ValueError(f"aggregator/{TAXONOMY_RESOURCE}: expected a mapping of tag paths")
    return rules_from_mapping(data, where=TAXONOMY_RESOURCE)


def _name_key(text: str) -> str:
    """The lookup key of a name or of the text a name pattern matched."""
    if "s" in text:
        text = _POSSESSIVE.sub("", text)
    return _SEPARATORS.sub("", text).casefold()


def _label_key(label: str) -> str:
    """The lookup key of a category label or alias: "#Bitcoin  News" -> "bitcoin news"."""
    return " ".join(html.unescape(label).strip().lstrip("#").split()).casefold()


# Atoms of a name pattern: a space in a name (after an optional possessive: "Polygon's
# zkEVM"), a hyphen in a name.
_SPACE = r"(?:['’]s)?(?:[^\S\n]|[\-‐‑–])+"  # not across the line between title, summary and categories
_HYPHEN = r"[\-‐‑–]?"


def _trie_pattern(words: Iterable[str], fold: bool) -> str:
    """One regex alternation for many words, shaped as a trie so matching stays fast.

    With `fold`, letters are lower-cased (the text is lower-cased, or matched with
    IGNORECASE). A space in a word matches any run of spaces and hyphens; a hyphen matches
    a hyphen or nothing ("sell-off", "selloff", but not the verb "sell off"). Where one word
    is a prefix of another the longer is tried first, so "Bitcoin Core" wins over "Bitcoin".
    """
    root: dict[str, dict[str, Any]] = {}
    for word in words:
        node = root
        for index, part in enumerate(word.split()):
            if index:
                node = node.setdefault(_SPACE, {})
            for char in part:
                atom = _HYPHEN if char in "-‐‑–" else re.escape(char.lower() if fold else char)
                node = node.setdefault(atom, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        branches = [atom + emit(child) for atom, child in sorted(node.items()) if atom]
        if not branches:
            return ""
        if len(branches) == 1 and "" not in node:
            return branches[0]
        group = "(?:" + "|".join(branches) + ")"
        return group + "?" if "" in node else group

    return emit(root) or "(?!)"


@dataclass(frozen=True)
class _Meaning:
    """What one matched name, ticker or category label stands for."""

    path: str
    needs_context: bool
    proper: bool = False  # a needs-context name that must be capitalized in the text


@dataclass
class _Matches:
    """What one entry's text matched so far."""

    paths: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)  # needs-context tickers and labels
    context_names: list[tuple[int, int, frozenset[_Meaning]]] = field(default_factory=list)  # span, meanings
    context_word: bool = False


class Taxonomy:
    """The tag taxonomy, compiled for matching. Build it with `Taxonomy.load()`."""

    def __init__(self, rules: Sequence[TagRule]) -> None:
        """Merge `rules` (several may share a path) and compile them; see `load`."""
        self._canonical: dict[str, str] = {}
        merged: dict[tuple[str, bool], dict[str, list[str]]] = {}
        for rule in rules:
            path = self._canonical_path(normalize_tag(rule.path), learn=True)
            node = merged.setdefault((path, rule.needs_context), {"names": [], "tickers": [], "aliases": []})
            node["names"].extend(" ".join(name.split()) for name in rule.names if name.strip())
            node["tickers"].extend(t.strip().lstrip("$").upper() for t in rule.tickers if t.strip("$ "))
            node["aliases"].extend(alias for alias in rule.aliases if alias.strip())
        self._rules = tuple(
            TagRule(
                path,
                tuple(dict.fromkeys(node["names"])),
                tuple(dict.fromkeys(node["tickers"])),
                tuple(dict.fromkeys(node["aliases"])),
                needs_context,
            )
            for (path, needs_context), node in merged.items()
        )
        self._paths = tuple(sorted(rollup(rule.path for rule in self._rules)))
        self._compile()

    @classmethod
    def load(cls, extra: Sequence[TagRule] = ()) -> Taxonomy:
        """The built-in taxonomy (aggregator/taxonomy.yaml) extended by `extra`.

        `extra` comes from feeds.yaml `tags:`. An extra rule for an existing path (compared
        case-insensitively) adds its names, tickers and aliases to that node, or with `replace`
        takes the node's place (an empty replacement switches a built-in tag off); a new path
        adds a node. Raises ValueError for an empty path segment or a name that does not start
        and end with a letter or digit.
        """
        replaced = {normalize_tag(rule.path).casefold() for rule in extra if rule.replace}
        builtin = [rule for rule in _builtin_rules() if normalize_tag(rule.path).casefold() not in replaced]
        return cls((*builtin, *extra))

    @property
    def paths(self) -> tuple[str, ...]:
        """Every tag path of the taxonomy, parents included, sorted."""
        return self._paths

    def tags_for(
        self,
        title: str,
        summary: str,
        categories: Sequence[str],
        feed_tags: Sequence[str] = (),
    ) -> frozenset[str]:
        """The tags of one entry, with parents rolled up.

        `title` is plain text; `summary` may be HTML (tags are dropped, entities decoded);
        `categories` are the entry's own labels; `feed_tags` are the feed's tags from the
        config (normalized here; ValueError if one has an empty segment).
        """
        title = html.unescape(title) if "&" in title else title
        summary = _plain_text(summary)
        categories = [html.unescape(label) if "&" in label else label for label in categories]
        found = _Matches()
        if feed_tags:
            found.paths.update(self._canonical_path(normalize_tag(tag)) for tag in feed_tags)
        for label in categories:
            self._match_label(label, found)
        text = "\n".join((title, summary, *categories))
        lowered = text.lower()
        if len(lowered) != len(text):  # rare letters whose lower case is longer: match with IGNORECASE
            lowered = ""
        self._match_names(text, lowered, found)
        self._match_tickers(text, len(title), len(title) + 1 + len(summary), found)
        if self._about_crypto(found):
            markets = self._markets
            if (
                markets is not None
                and markets not in found.paths
                and markets not in found.pending
                and self._has_price_move(text, lowered)
            ):
                found.pending.add(markets)
            found.paths.update(found.pending)
            for start, end, meanings in found.context_names:
                if not _in_everyday_phrase(text, start, end):
                    capitalized = text[start].isupper()
                    found.paths.update(m.path for m in meanings if capitalized or not m.proper)
        return rollup(found.paths)

    def _canonical_path(self, path: str, learn: bool = False) -> str:
        """Spell `path` (and each parent) as the taxonomy first spelled it ("blockchain/btc")."""
        spelled: list[str] = []
        for segment in path.split("/"):
            prefix = "/".join([*spelled, segment])
            known = self._canonical.get(prefix.casefold())
            if known is None:
                known = prefix
                if learn:
                    self._canonical[prefix.casefold()] = prefix
            spelled = known.split("/")
        return "/".join(spelled)

    def _compile(self) -> None:
        names: dict[str, set[_Meaning]] = {}
        tickers: dict[str, set[_Meaning]] = {}
        context_labels: dict[str, set[str]] = {}  # path -> label keys that need context
        for rule in self._rules:
            for name in rule.names:
                if not _WORD_EDGE.match(name):
                    raise ValueError(f"{rule.path}: name {name!r} must start and end with a letter or digit")
                proper = rule.needs_context and name[0].isupper()
                names.setdefault(_name_key(name), set()).add(_Meaning(rule.path, rule.needs_context, proper))
            for ticker in rule.tickers:
                if not _WORD_EDGE.match(ticker):
                    raise ValueError(f"{rule.path}: ticker {ticker!r} must be letters and digits")
                tickers.setdefault(ticker, set()).add(_Meaning(rule.path, rule.needs_context))
            if rule.needs_context:
                context_labels.setdefault(rule.path, set()).update(
                    _label_key(word) for word in (*rule.names, *rule.tickers)
                )
        # The combined regex reports only the longest match, so a long name also carries the
        # meaning of the shorter names inside it ("crypto market" is Blockchain too). A plain
        # long name is evidence even for a needs-context short one ("ether ETF" is Ethereum),
        # unless it is an everyday phrase ("liquidity mining" is not Mining).
        for rule in self._rules:
            for name in rule.names:
                words = [word for word in _SEPARATORS.split(name) if word]
                trusted = not rule.needs_context and not _is_everyday_phrase(name)
                inner: set[str] = set()
                for first in range(len(words)):
                    for last in range(first + 1, len(words) + 1):
                        if last - first < len(words):
                            meanings = names.get(_name_key("".join(words[first:last])), set())
                            inner.update(m.path for m in meanings if trusted or not m.needs_context)
                    inner.update(m.path for m in tickers.get(words[first], ()) if not m.needs_context)
                names[_name_key(name)].update(_Meaning(path, needs_context=False) for path in inner)
        # A category equal to a node's path, last segment, alias or (not ordinary-word) ticker
        # names that node. It needs context when its rule does, or when the label is one of
        # the node's needs-context words (a "Gemini" category).
        labels: dict[str, set[_Meaning]] = {}
        for rule in self._rules:
            needing = context_labels.get(rule.path, set())
            for label in (rule.path, rule.path.rsplit("/", 1)[-1], *rule.aliases, *rule.tickers):
                if label in rule.tickers and label in ORDINARY_WORD_TICKERS:
                    continue
                key = _label_key(label)
                labels.setdefault(key, set()).add(_Meaning(rule.path, rule.needs_context or key in needing))
        # name key -> (paths it always means, meanings that need context)
        self._names = {
            key: (
                frozenset(m.path for m in meanings if not m.needs_context),
                frozenset(m for m in meanings if m.needs_context),
            )
            for key, meanings in names.items()
        }
        self._tickers = {key: frozenset(meanings) for key, meanings in tickers.items()}
        self._labels = {key: frozenset(meanings) for key, meanings in labels.items()}
        self._context_words = frozenset(_name_key(word) for word in CONTEXT_WORDS)
        all_names = (*(name for rule in self._rules for name in rule.names), *CONTEXT_WORDS)
        word_pattern = _trie_pattern(all_names, fold=True)
        # Matching the lower-cased text is twice as fast as IGNORECASE; the latter is kept for
        # the rare text whose length changes when lower-cased (see `_name_re_ignorecase`).
        self._name_re = re.compile(rf"(?<!\w)(?:{word_pattern})(?!\w)")
        move_pattern = _trie_pattern(MOVE_KINDS, fold=True)
        self._move_re = re.compile(rf"(?<!\w)(?:{move_pattern})(?!\w)")
        self._markets = MARKETS_TAG if MARKETS_TAG in self._paths else None
        symbols = _trie_pattern(tickers, fold=False)
        first_chars = "".join(sorted({re.escape(ticker[0]) for ticker in tickers}))
        self._ticker_re = re.compile(
            rf"(?=[{first_chars}$])(?<![\w$])"
            rf"(?:\$(?P<dollar>(?i:{symbols}))|(?P<caps>{symbols})(?P<pair>{'|'.join(_PAIR_QUOTES)})?)"
            r"(?!\w)(?![\-‐‑][Ee][Dd](?!\w))"  # OP-ED is not Optimism
        )

    # Compiled on first use: a large pattern takes a few hundredths of a second to compile, and
    # most processes never meet a text that needs it.
    @cached_property
    def _name_re_ignorecase(self) -> re.Pattern[str]:
        return re.compile(self._name_re.pattern, re.IGNORECASE)

    @cached_property
    def _move_re_ignorecase(self) -> re.Pattern[str]:
        return re.compile(self._move_re.pattern, re.IGNORECASE)

    def _match_label(self, label: str, found: _Matches) -> None:
        key = _label_key(label)
        meanings = self._labels.get(key)
        if meanings is None:
            pair = _PAIR_LABEL.match(key)  # "btcusdt", "xrpusd"
            meanings = self._labels.get(pair.group(1)) if pair else None
        for meaning in meanings or ():
            (found.pending if meaning.needs_context else found.paths).add(meaning.path)

    def _match_names(self, text: str, lowered: str, found: _Matches) -> None:
        matches = self._name_re.finditer(lowered) if lowered else self._name_re_ignorecase.finditer(text)
        for match in matches:
            matched = match.group()
            split = self._names.get(matched)
            if split is None:
                key = _name_key(matched)
                split = self._names.get(key)
                if split is None:  # a context word ("token"), not a name
                    found.context_word = found.context_word or key in self._context_words
                    continue
            plain_paths, context_meanings = split
            if plain_paths and matched in _EVERYDAY_PHRASES and _in_everyday_phrase(text, *match.span()):
                continue  # "chainlink fence": even a name that needs no context has everyday uses
            found.paths.update(plain_paths)
            if context_meanings:
                found.context_names.append((match.start(), match.end(), context_meanings))

    def _match_tickers(self, text: str, title_end: int, summary_end: int, found: _Matches) -> None:
        shouting: dict[bool, bool] = {}  # is the title / the summary written in capitals?
        for match in self._ticker_re.finditer(text):
            caps = match.group("caps")
            ticker = caps or match.group("dollar").upper()
            ordinary = bool(caps) and not match.group("pair") and ticker in ORDINARY_WORD_TICKERS
            if ordinary and match.start() < summary_end:  # capitals in categories are deliberate
                in_title = match.start() < title_end
                if in_title not in shouting:
                    part = text[:title_end] if in_title else text[title_end + 1 : summary_end]
                    shouting[in_title] = _is_all_caps(part)
                if shouting[in_title]:
                    continue
            if caps and _in_everyday_phrase(text, match.start(), match.end()):  # "SEC title", "ETH Zurich"
                continue
            for meaning in self._tickers.get(ticker, ()):
                (found.pending if meaning.needs_context or ordinary else found.paths).add(meaning.path)

    def _has_price_move(self, text: str, lowered: str) -> bool:
        """Whether the text reports a price move by its shape (see MARKETS_TAG)."""
        source = lowered or text
        matches = (self._move_re if lowered else self._move_re_ignorecase).finditer(source)
        for match in matches:
            kind = MOVE_KINDS.get(match.group().lower(), "coin or figure")
            end = match.end()
            if FIGURE_AFTER_KIND[kind].match(source, end):
                return True
            after_coin = kind.startswith("coin") and PAUSE_AFTER.match(source, end)
            if after_coin and self._is_coin_before(text, match.start()):
                return True
        return False

    def _is_coin_before(self, text: str, start: int) -> bool:
        """Whether the words just before text[start] name a coin ("Tron's TRX", "ARB token")."""
        line_start = text.rfind("\n", 0, start) + 1
        words = text[max(line_start, start - _PHRASE_REACH) : start].split()
        if len(words) > 1 and words[-1].lower() in SUBJECT_NOUNS:
            words.pop()
        if not words:
            return False
        word = _POSSESSIVE.sub("", words[-1] + " ").strip().strip("()[],:;\"'‘’“”")
        if word.lower() in PLURAL_SUBJECTS:
            return True
        if word.startswith("$"):
            word = word[1:].upper()
        if word in self._tickers:
            return True
        split = self._names.get(_name_key(word))
        if split is None:
            return False
        plain_paths, context_meanings = split
        paths = plain_paths | {meaning.path for meaning in context_meanings}
        return any(path.startswith(COIN_ROOT) for path in paths)

    @staticmethod
    def _about_crypto(found: _Matches) -> bool:
        """Whether the entry is clearly about crypto, so needs-context words may count."""
        return found.context_word or any(path.split("/", 1)[0] in CRYPTO_ROOTS for path in found.paths)


def _in_everyday_phrase(text: str, start: int, end: int) -> bool:
    """Whether the name at text[start:end] is part of an everyday phrase ("ripple effect")."""
    phrases = _EVERYDAY_PHRASES.get(text[start:end].casefold())
    if phrases is None:
        return False
    # Within the name's own line: title, summary and each category are separate texts.
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    window_start = max(line_start, start - _PHRASE_REACH)
    window_end = min(line_end if line_end >= 0 else len(text), end + _PHRASE_REACH)
    for phrase in phrases.finditer(text, window_start, window_end):
        if phrase.start() <= start and end <= phrase.end():
            return True
    return False


def _is_everyday_phrase(name: str) -> bool:
    """Whether a whole taxonomy name is an everyday phrase ("liquidity mining")."""
    return any(
        phrases.fullmatch(name) is not None
        for word in _SEPARATORS.split(name)
        if (phrases := _EVERYDAY_PHRASES.get(word.casefold())) is not None
    )


def _plain_text(markup: str) -> str:
    """Cheaply turn an HTML summary into text: drop tags, decode entities."""
    if "<" in markup:
        markup = _MARKUP.sub(" ", markup)
    if "&" in markup:
        markup = html.unescape(markup)
    return markup


def _is_all_caps(text: str) -> bool:
    """True for a shouted headline: nearly every cased letter is a capital."""
    upper = sum(map(str.isupper, text))
    lower = sum(map(str.islower, text))
    return upper >= 8 and upper >= 0.9 * (upper + lower)
