"""Cross-outlet stories: which entries, from any feeds, report the same event.

`StoryIndex` keeps the recent stories in memory and decides, for each new entry, the
story it joins or that it starts a new one: it joins the most similar story with an
entry within `WINDOW` of it when the similarity passes `THRESHOLD`. Similarity combines
the words of the title and the lede (weighted, with the words every crypto headline uses
counting little), a fuzzy match of the titles (rapidfuzz), the entities both are tagged
with, and how far apart in time they are.

Deterministic and incremental: entries are assigned in the order they were stored, a
story's id is its first entry's id and never changes, and the same entries in the same
order always give the same stories. `assign_pending` is the only part that touches the
store; everything else is pure.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from rapidfuzz import fuzz

from aggregator.models import StoryItem
from aggregator.store import Store

log = logging.getLogger(__name__)

# How far apart (by publication time) two reports of one event can be.
WINDOW = timedelta(hours=48)
# The similarity an entry needs to join a story; an entry from an outlet already in the
# story needs more, since outlets rarely report one event twice.
THRESHOLD = 0.42
SAME_FEED_PENALTY = 0.12
# Only the stories sharing the most distinctive words are scored, so a busy day stays quick.
MAX_CANDIDATES = 40
# How much of the lede (plain summary) counts beside the title.
LEDE_CHARS = 320
TITLE_WEIGHT = 2.0
LEDE_WEIGHT = 1.0
ASSIGN_BATCH = 2000

# Tags that say nothing about which event an entry reports.
_BROAD_TAGS = frozenset({"Blockchain", "Blockchain/Bitcoin", "Blockchain/Ethereum", "Regulation"})
_TOPIC_TAGS = frozenset({"Markets", "Regulation", "Security", "DeFi", "NFT", "Mining", "ETF", "CBDC"})


# Function words, and the words nearly every crypto headline uses: they count for little.
def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOPWORDS = _word_set(
    """a an and are as at be been being but by can could did do does for from had has have he her his how
    i if in into is it its just may might more most much must new no not now of off on one only or our out
    over own so some such than that the their them then there these they this those through to too under
    up very was we were what when where which while who why will with would you your after before about
    against amid among also again all any because both each few first last many next other same since
    still via yet says said say according report reports reported here latest today week weekly daily
    news update updates live just"""
)
_COMMON_WORDS = _word_set(
    """crypto cryptocurrency cryptocurrencies blockchain bitcoin btc ethereum eth ether token tokens coin
    coins price prices market markets trading trader traders exchange exchanges investor investors
    industry digital asset assets analysis analyst analysts million billion percent year years month
    months day days time high low week weeks rise rises fall falls gain gains drop drops surge surges
    set sets make makes big top key major amid could"""
)
_COMMON_WEIGHT = 0.35
_NUMBER_WEIGHT = 1.4
_WORD_RE = re.compile(r"\$?\d+(?:[.,]\d+)*[%kmb]?|[^\W\d_]+(?:['’][^\W\d_]+)?", re.UNICODE)
# Words are compared by their first letters: "arrested" and "arrest", "lawsuits" and "lawsuit".
_STEM_LENGTH = 6


@dataclass(frozen=True)
class Profile:
    """An entry reduced to what similarity needs."""

    id: int
    feed: str
    published: datetime
    title: str
    words: dict[str, float]
    norm: float
    entities: frozenset[str]


def profile(item: StoryItem) -> Profile:
    """The comparable form of one entry: weighted words of its title and lede, its entities."""
    words: dict[str, float] = {}
    for token in _tokens(item.title):
        words[token] = max(words.get(token, 0.0), TITLE_WEIGHT * _weight(token))
    for token in _tokens(item.text[:LEDE_CHARS]):
        words[token] = max(words.get(token, 0.0), LEDE_WEIGHT * _weight(token))
    norm = math.sqrt(sum(weight * weight for weight in words.values())) or 1.0
    entities = frozenset(tag for tag in item.tags if tag not in _BROAD_TAGS and tag not in _TOPIC_TAGS)
    return Profile(item.id, item.feed, item.published, _fold(item.title), words, norm, entities)


def similarity(a: Profile, b: Profile) -> float:
    """How likely two entries report the same event, from 0 to about 1."""
    shared = a.words.keys() & b.words.keys()
    cosine = sum(a.words[word] * b.words[word] for word in shared) / (a.norm * b.norm)
    titles = fuzz.token_set_ratio(a.title, b.title) / 100.0
    score = 0.7 * cosine + 0.3 * titles * min(1.0, cosine * 4)
    if a.entities and b.entities:
        score += 0.08 if a.entities & b.entities else -0.12
    hours = abs((a.published - b.published).total_seconds()) / 3600
    return score * (1.0 - 0.25 * min(1.0, hours / (WINDOW.total_seconds() / 3600)))


class StoryIndex:
    """The recent stories, in memory, that new entries are compared with."""

    def __init__(self, window: timedelta = WINDOW, threshold: float = THRESHOLD) -> None:
        self.window = window
        self.threshold = threshold
        self._members: dict[int, list[Profile]] = {}
        self._postings: dict[str, set[int]] = defaultdict(set)
        self._known: set[int] = set()
        self.latest: datetime | None = None
        # The store's members published since this moment are in memory (see `assign_pending`).
        self.loaded_since: datetime | None = None

    def __len__(self) -> int:
        return len(self._members)

    def add(self, item: StoryItem, story: int) -> None:
        """Record an entry already in a story (loaded from the store); a known entry is skipped."""
        if item.id not in self._known:
            self._add(profile(item), story)

    def assign(self, item: StoryItem) -> int:
        """The story `item` belongs to (an existing one, or a new one with the item's id); records it."""
        candidate = profile(item)
        best_story, best_score = candidate.id, self.threshold
        for story in self._candidates(candidate):
            score = self._score(candidate, self._members[story])
            if score > best_score or (score == best_score and story < best_story):
                best_story, best_score = story, score
        self._add(candidate, best_story)
        return best_story

    def forget_older_than(self, moment: datetime) -> None:
        """Drop stories whose newest entry is before `moment`, so memory stays bounded."""
        for story in [story for story, members in self._members.items() if members[-1].published < moment]:
            for member in self._members.pop(story):
                self._known.discard(member.id)
                for word in member.words:
                    self._postings[word].discard(story)
        if self.loaded_since is not None and self.loaded_since < moment:
            self.loaded_since = moment

    def _score(self, candidate: Profile, members: list[Profile]) -> float:
        near = [m for m in members if abs(m.published - candidate.published) <= self.window]
        if not near:
            return 0.0
        score = max(similarity(candidate, member) for member in near)
        if any(member.feed == candidate.feed for member in members):
            score -= SAME_FEED_PENALTY
        return score

    def _candidates(self, candidate: Profile) -> list[int]:
        shared: dict[int, float] = defaultdict(float)
        for word, weight in candidate.words.items():
            if weight < 1.0:  # common words alone never make two entries one story
                continue
            for story in self._postings.get(word, ()):
                shared[story] += weight
        ranked = sorted(shared.items(), key=lambda pair: (-pair[1], pair[0]))
        return [story for story, _ in ranked[:MAX_CANDIDATES]]

    def _add(self, member: Profile, story: int) -> None:
        members = self._members.setdefault(story, [])
        members.append(member)
        self._known.add(member.id)
        members.sort(key=lambda m: (m.published, m.id))
        for word, weight in member.words.items():
            if weight >= 1.0:
                self._postings[word].add(story)
        if self.latest is None or member.published > self.latest:
            self.latest = member.published


def cluster(items: Iterable[StoryItem], window: timedelta = WINDOW, threshold: float = THRESHOLD) -> dict[int, int]:
    """Stories for entries seen in this order, from scratch: entry id -> story id."""
    index = StoryIndex(window, threshold)
    return {item.id: index.assign(item) for item in items}


def assign_pending(store: Store, index: StoryIndex, now: datetime) -> int:
    """Put every entry that is in no story yet into one, oldest first; returns how many."""
    done = 0
    while items := store.unassigned_items(ASSIGN_BATCH):
        _load_window(store, index, min(item.published for item in items) - index.window)
        assignments = [(item.id, index.assign(item)) for item in items]
        store.save_story_assignments(assignments, now)
        done += len(assignments)
    if done and index.latest is not None:
        index.forget_older_than(index.latest - 3 * index.window)
    return done


def _load_window(store: Store, index: StoryIndex, since: datetime) -> None:
    """Make sure the index knows every stored story member published since `since`."""
    if index.loaded_since is not None and index.loaded_since <= since:
        return
    for item, story in store.story_items_since(since):
        index.add(item, story)
    index.loaded_since = since


def _tokens(text: str) -> list[str]:
    return [_stem(token) for token in _WORD_RE.findall(_fold(text)) if token not in _STOPWORDS]


def _fold(text: str) -> str:
    """Lower case without accents or curly quotes, so spellings of one word compare equal."""
    text = unicodedata.normalize("NFKD", text.lower().replace("’", "'"))
    return "".join(char for char in text if not unicodedata.combining(char))


def _stem(token: str) -> str:
    if token[0].isdigit() or token[0] == "$":
        return token.lstrip("$").replace(",", "")
    if token.endswith("'s"):
        token = token[:-2]
    if len(token) > _STEM_LENGTH:
        return token[:_STEM_LENGTH]
    if len(token) >= 4 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


_COMMON_STEMS = frozenset(_stem(word) for word in _COMMON_WORDS)


def _weight(token: str) -> float:
    if token[0].isdigit():
        return _NUMBER_WEIGHT
    if token in _COMMON_STEMS:
        return _COMMON_WEIGHT
    if len(token) <= 2:
        return 0.5
    return 1.0
