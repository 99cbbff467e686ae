"""What search needs to know of SQLite FTS5 without a connection: query text and bm25.

Part of the store. `parse_query` turns what a person typed into an FTS5 MATCH expression.
The rest ranks plain-word queries the way FTS5's own ``bm25()`` does, from numbers the
store reads. FTS5's bm25() first counts the entries holding each word of the query, a walk
of the word's whole list of entries: 25 to 50 ms for a word found in most of a 1,000,000-entry
archive, for every query. Here a word's count is exact up to DOCUMENT_COUNT_LIMIT entries and
estimated beyond; everything else (how often each word occurs in an entry, weighted by
column; the entry's length in tokens; the average length; the number of entries) is FTS5's
own, read from its highlight() marks and its shadow tables. This module speaks no SQL.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from aggregator.errors import SearchQueryError

# Search snippets mark matches with these (never found in stored text); callers escape, then mark.
MATCH_START = "\x02"
MATCH_END = "\x03"
# bm25's constants as FTS5 fixes them, and the weight of a match in each indexed column
# (title, summary_text): a title match counts five times a summary match.
BM25_K1 = 1.2
BM25_B = 0.75
COLUMN_WEIGHTS = (5.0, 1.0)
# FTS5's bm25 never lets a phrase found in more than half the entries weigh zero or less.
MIN_IDF = 1e-6
# A phrase's entries are counted exactly up to this many (about 1 ms each 20,000); a phrase found
# in more is common, and its count is estimated from where its newest matches fall.
DOCUMENT_COUNT_LIMIT = 20_000

# Words that make a query FTS5 syntax rather than plain words to look for.
_FTS_SYNTAX_RE = re.compile(r'["()*^:{}]|\b(?:AND|OR|NOT|NEAR)\b')
_COMPOUND_WORD_RE = re.compile(r"(?<![\w\"])\w+(?:[.'’-]\w+)+(?![\w*])")
_WORD_RE = re.compile(r"\w+(?:[.'’-]\w+)*")
# A token as FTS5's unicode61 tokenizer cuts them: letters and digits; "_" separates.
_TOKEN_RE = re.compile(r"[^\W_]+")
_MARKED_RE = re.compile(f"{MATCH_START}([^{MATCH_END}]*){MATCH_END}")

Phrase = tuple[str, ...]


@dataclass(frozen=True)
class PlainWord:
    """One word of a plain query: the phrase FTS5 looks for, and its tokens as FTS5 folds them."""

    match: str  # '"Crypto.com"'
    tokens: Phrase  # ('crypto', 'com')


@dataclass(frozen=True)
class SearchQuery:
    """A query as FTS5 reads it, and its plain words, which are its phrases in order.

    `words` is None when the query uses FTS5 syntax: FTS5 ranks those itself.
    """

    match: str
    words: tuple[PlainWord, ...] | None


@dataclass(frozen=True)
class IndexTotals:
    """FTS5's averages record: how many entries the index holds and how many tokens in all."""

    rows: int
    tokens: int

    @property
    def average_size(self) -> float:
        return max(self.tokens, 1) / max(self.rows, 1)


def parse_query(query: str) -> SearchQuery:
    """The FTS5 MATCH expression for what a person typed, and its phrases when it is plain words.

    Plain words become quoted terms that must all appear ("Crypto.com" and "Binance's"
    are words, not syntax); a query that already uses FTS5 syntax (quotes, AND/OR/NOT,
    NEAR, a prefix *, a column:) is passed on as written, except that its words with a dot,
    apostrophe or hyphen are quoted (`Crypto.com OR Gemini`), which FTS5 would reject.
    """
    text = query.strip()
    if not text:
        raise SearchQueryError("the search query is empty; give one or more words")
    if _FTS_SYNTAX_RE.search(text):
        # Outside quoted phrases (the odd-numbered parts are inside), quote compound words.
        parts = text.split('"')
        for index in range(0, len(parts), 2):
            parts[index] = _COMPOUND_WORD_RE.sub(lambda match: f'"{match.group()}"', parts[index])
        return SearchQuery('"'.join(parts), None)
    # A word of underscores holds no token: FTS5 would skip it beside other words, so skip it here.
    plain = tuple(PlainWord(f'"{word}"', tokens(word)) for word in _WORD_RE.findall(text) if tokens(word))
    if not plain:
        raise SearchQueryError(f"the search query {query!r} has no words to look for")
    return SearchQuery(" ".join(word.match for word in plain), plain)


def tokens(text: str) -> Phrase:
    """Text cut into tokens and folded much as FTS5's unicode61 tokenizer does (case, accents).

    Used only to tell which of a query's phrases a match FTS5 found is: the two agree on
    letters and digits, upper and lower case and accented Latin letters; they may differ on
    rare characters FTS5 folds its own way (µ, ſ), where a match then counts for no phrase.
    """
    text = text.lower()
    if not text.isascii():
        decomposed = unicodedata.normalize("NFD", text)
        text = "".join(char for char in decomposed if not unicodedata.combining(char))
    return tuple(_TOKEN_RE.findall(text))


def phrase_frequencies(marked_columns: Sequence[str | None], phrases: Sequence[Phrase]) -> list[float]:
    """For each phrase, its matches in one entry, each weighted by its column's COLUMN_WEIGHTS.

    `marked_columns` are the entry's columns as FTS5's highlight() gives them, each match
    between MATCH_START and MATCH_END; highlight() joins overlapping matches into one mark
    (a query's two phrases on the same word), so each mark is cut into tokens and every
    phrase counted where it occurs.
    """
    frequencies = [0.0] * len(phrases)
    for weight, marked in zip(COLUMN_WEIGHTS, marked_columns, strict=False):
        for span in _MARKED_RE.findall(marked or ""):
            for index, count in enumerate(_span_counts(span, tuple(phrases))):
                frequencies[index] += weight * count
    return frequencies


@functools.lru_cache(maxsize=4096)
def _span_counts(span: str, phrases: tuple[Phrase, ...]) -> tuple[int, ...]:
    """How often each phrase occurs in one marked span (the same few spans recur across entries)."""
    found = tokens(span)
    return tuple(_occurrences(found, phrase) for phrase in phrases)


def _occurrences(found: Phrase, phrase: Phrase) -> int:
    width = len(phrase)
    if width == 1:
        return found.count(phrase[0])
    return sum(1 for start in range(len(found) - width + 1) if found[start : start + width] == phrase)


def document_count(
    found: int, oldest_id: int, newest_id: int, totals: IndexTotals, limit: int = DOCUMENT_COUNT_LIMIT
) -> float:
    """How many entries hold a phrase, from its newest `found` matches (at most `limit` + 1).

    Up to `limit` the count is exact. Beyond, the phrase is taken to be as frequent in
    the whole index as among the entries from its oldest counted match on (ids grow with
    time): 20,001 matches among the newest 25,000 entries make 80 % of the index.
    """
    if found <= limit:
        return float(found)
    estimate = found * totals.rows / max(newest_id - oldest_id + 1, 1)
    # At least the matches counted, at most every entry (ids of deleted entries widen the span).
    return min(max(estimate, float(found)), float(totals.rows))


def idf(documents: float, totals: IndexTotals) -> float:
    """bm25's inverse document frequency, as FTS5 computes it (never below MIN_IDF).

    A count read just after a writer added entries may exceed the totals read just before.
    """
    documents = min(documents, totals.rows)
    value = math.log((totals.rows - documents + 0.5) / (documents + 0.5))
    return value if value > 0.0 else MIN_IDF


def bm25(frequencies: Sequence[float], idfs: Sequence[float], size: int, average_size: float) -> float:
    """An entry's bm25 rank (lower is better), with the arithmetic of FTS5's bm25() step by step."""
    score = 0.0
    for frequency, weight in zip(frequencies, idfs, strict=True):
        score += weight * (
            (frequency * (BM25_K1 + 1.0)) / (frequency + BM25_K1 * (1 - BM25_B + BM25_B * size / average_size))
        )
    return -1.0 * score


def index_totals(averages: bytes) -> IndexTotals:
    """FTS5's averages record (the number of rows, then the tokens of each column) as totals."""
    rows, *columns = _varints(averages) or [0]
    return IndexTotals(rows, sum(columns))


def entry_size(docsize: bytes | None) -> int:
    """An entry's length in tokens, all columns together, from its row of FTS5's docsize table."""
    return sum(_varints(docsize or b""))


def _varints(blob: bytes) -> list[int]:
    """The integers of an FTS5 record: SQLite varints, 7 bits a byte, big-endian, the 9th byte whole."""
    values: list[int] = []
    position = 0
    while position < len(blob):
        value = 0
        for index in range(9):
            byte = blob[position]
            position += 1
            if index == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                break
        values.append(value)
    return values
