"""How well `stories` groups real outlets' reports of the same event, against a hand-labeled gold set.

tests/data/stories/gold.yaml names, for five days captured from ../shared/corpus/real, which
entries (by link) report the same event. Every entry of those days is parsed and tagged by the
real pipeline, fed to the clustering in publication order (as polling would), and the pairs it
puts together are compared with the gold pairs. Skipped where ../shared is absent.

Run `python -m tests.test_story_quality` for a report of every wrong and missed pair, `-q` for
the numbers only, and `--loso` for leave-one-set-out numbers (the threshold chosen on four sets,
measured on the fifth).

The issue asked for precision >= 0.95 and recall >= 0.85. Precision is met (0.959). Recall is
not (0.301; held out with `--loso`: P 0.957, R 0.288), and is not within reach of word-based
similarity on this gold. Two stories hold a third of its pairs (the SEC suing Coinbase: 18
entries, 153 pairs; suing Binance: 11 entries, 55 pairs), and most of their members are
follow-ups (the CEO's response, takeaways from the complaint) that share little more than
"Coinbase", "SEC" and "sue" with the rest. So do the same day's entries that the gold
keeps apart as other happenings (ten states acting against Coinbase, Coinbase's stock falling,
its legal chief before Congress): by idf-weighted cosine, their mean similarity to the
story's members (0.06-0.12) lies inside the members' own range (0.06-0.17). Over every same-day
pair, the best single measure (title and lede cosine) has pair precision 0.40 at recall 0.51.
Measured and no better at precision 0.95: event frames (the named companies and regulators plus
the kind of action), scoring against the closest member as well as the centroid, smaller
same-outlet penalties, title/lede weights and lede lengths, flatter idf, more candidate stories,
weightings of all of these (a random search of 1,200; chosen on four days, on the fifth:
P 0.83, R 0.26), and a logistic fit on them.
`test_stories_match_the_gold_pairs` therefore guards the level reached (so a change cannot make
it worse unnoticed), and `test_recall_target_of_the_issue` records the target as an expected
failure.

The gold was audited by a second reading of its two busiest days (see "Revisions" in its
header): one label changed, so the old gold's pairs are all kept and are 98.4% of the new ones.
"""

from __future__ import annotations

import functools
import itertools
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from aggregator.models import StoryItem
from aggregator.parse import parse_feed
from aggregator.stories import StoryIndex, cluster
from aggregator.tagging import Taxonomy

GOLD = Path(__file__).parent / "data" / "stories" / "gold.yaml"
CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "real"
PARSE_NOW = datetime(2026, 1, 1, tzinfo=UTC)
MIN_PRECISION = 0.95
MIN_RECALL = 0.29  # reached: 0.301 (see the module docstring)
TARGET_RECALL = 0.85


@dataclass(frozen=True)
class Labeled:
    item: StoryItem
    link: str
    gold: str


def labeled_sets() -> Iterator[tuple[str, list[Labeled]]]:
    """Each gold set's in-window entries, in publication order, with their gold story label."""
    yield from _parsed_sets()


@functools.cache
def _parsed_sets() -> list[tuple[str, list[Labeled]]]:
    document = yaml.safe_load(GOLD.read_text(encoding="utf-8"))
    taxonomy = Taxonomy.load()
    return [(str(spec["name"]), _entries_of(spec, taxonomy)) for spec in document["sets"]]


def _entries_of(spec: dict[str, Any], taxonomy: Taxonomy) -> list[Labeled]:
    since = datetime.fromisoformat(str(spec["since"]).replace("Z", "+00:00"))
    label_of = {link: story["label"] for story in spec["stories"] for link in story["links"]}
    found: dict[str, tuple[str, Any]] = {}
    for relative in spec["files"]:
        outlet = relative.split("/", 1)[0]
        body = (CORPUS / relative).read_bytes()
        parsed = parse_feed(body, f"https://{outlet}.example/feed", {}, PARSE_NOW)
        for entry in parsed.entries:
            if entry.link and entry.published and entry.published >= since and entry.link not in found:
                found[entry.link] = (outlet, entry)
    ordered = sorted(found.items(), key=lambda pair: (pair[1][1].published, pair[1][0], pair[0]))
    labeled = []
    for number, (link, (outlet, entry)) in enumerate(ordered, start=1):
        tags = taxonomy.tags_for(entry.title, entry.summary, entry.categories, ())
        item = StoryItem(number, outlet, entry.title, entry.text, tags, entry.published)
        labeled.append(Labeled(item, link, label_of.get(link, f"single:{link}")))
    missing = set(label_of) - set(found)
    assert not missing, f"gold links not found among the set's entries: {sorted(missing)[:5]}"
    return labeled


@dataclass(frozen=True)
class Score:
    true_pairs: int
    predicted_pairs: int
    gold_pairs: int

    @property
    def precision(self) -> float:
        return self.true_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.true_pairs / self.gold_pairs if self.gold_pairs else 1.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0

    def __add__(self, other: Score) -> Score:
        return Score(
            self.true_pairs + other.true_pairs,
            self.predicted_pairs + other.predicted_pairs,
            self.gold_pairs + other.gold_pairs,
        )


def pairs(groups: dict[int, Any]) -> set[tuple[int, int]]:
    """Every pair of ids that share a group."""
    members: dict[Any, list[int]] = {}
    for item_id, group in groups.items():
        members.setdefault(group, []).append(item_id)
    return {tuple(sorted(pair)) for ids in members.values() for pair in itertools.combinations(ids, 2)}  # type: ignore[misc]


def evaluate(entries: list[Labeled]) -> tuple[Score, set[tuple[int, int]], set[tuple[int, int]]]:
    predicted = pairs(cluster(entry.item for entry in entries))
    gold = pairs({entry.item.id: entry.gold for entry in entries})
    return _score_pairs(predicted, gold), predicted - gold, gold - predicted


def _score_pairs(predicted: set[tuple[int, int]], gold: set[tuple[int, int]]) -> Score:
    return Score(len(predicted & gold), len(predicted), len(gold))


needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus/real is not beside the checkout")


@needs_corpus
def test_gold_set_is_large_enough() -> None:
    sets = dict(labeled_sets())
    assert len(sets) >= 3
    gold_pairs = sum(len(pairs({e.item.id: e.gold for e in entries})) for entries in sets.values())
    assert gold_pairs >= 300


def total_score() -> tuple[Score, str]:
    """The score over all sets, and a report of each set's."""
    total = Score(0, 0, 0)
    lines = []
    for name, entries in labeled_sets():
        score, _wrong, _missed = evaluate(entries)
        total += score
        lines.append(f"{name}: precision {score.precision:.3f} recall {score.recall:.3f} f1 {score.f1:.3f}")
    report = "\n".join(lines) + f"\nall: precision {total.precision:.3f} recall {total.recall:.3f} f1 {total.f1:.3f}"
    return total, report


@needs_corpus
def test_stories_match_the_gold_pairs() -> None:
    total, report = total_score()
    print(report)
    assert total.precision >= MIN_PRECISION, report
    assert total.recall >= MIN_RECALL, report


@needs_corpus
@pytest.mark.xfail(reason="the issue's recall target: not reached by word-based similarity", strict=True)
def test_recall_target_of_the_issue() -> None:
    total, report = total_score()
    assert total.recall >= TARGET_RECALL, report


@needs_corpus
@pytest.mark.parametrize("name", [name for name, _ in labeled_sets()] if CORPUS.is_dir() else [])
def test_clustering_is_deterministic_and_incremental(name: str) -> None:
    entries = dict(labeled_sets())[name]
    items = [entry.item for entry in entries]
    once = cluster(items)
    assert cluster(items) == once
    index = StoryIndex()
    half = len(items) // 2
    first = {item.id: index.assign(item) for item in items[:half]}
    # A fresh index that learns the first half from storage, then assigns the rest, agrees.
    resumed = StoryIndex()
    for item in items[:half]:
        resumed.add(item, first[item.id])
    rest = {item.id: resumed.assign(item) for item in items[half:]}
    assert {**first, **rest} == once
    assert all(story <= item_id for item_id, story in once.items()), "a story's id is its first entry's"


def test_one_outlets_templated_titles_do_not_make_one_endless_story() -> None:
    topics = ("Bitcoin ETF inflows", "Exchange lists a token", "Stablecoin attestation")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    items = [
        StoryItem(
            number,
            "wire",
            f"{topics[number % len(topics)]} (#{number})",
            f"Item {number}: a short summary.",
            frozenset({"Blockchain"}),
            start + timedelta(seconds=30 * number),
        )
        for number in range(1, 3001)
    ]
    sizes = Counter(cluster(items).values())
    assert max(sizes.values()) <= 3


def test_recaps_and_price_analyses_stand_alone() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    titles = [
        "SEC sues Acme exchange over unregistered securities",
        "Acme exchange sued by the SEC over unregistered securities",
        "Today in Crypto: SEC sues Acme exchange over unregistered securities",
        "Acme Token price prediction as SEC sues Acme exchange",
    ]
    items = [
        StoryItem(number, f"outlet{number}", title, "", frozenset(), start + timedelta(minutes=number))
        for number, title in enumerate(titles, start=1)
    ]
    assert cluster(items) == {1: 1, 2: 1, 3: 3, 4: 4}


def leave_one_set_out() -> None:
    """Choose the threshold on four sets, measure on the fifth: how the tuning generalizes."""
    sets = dict(labeled_sets())
    thresholds = [round(0.2 + 0.025 * step, 3) for step in range(13)]
    scores = {
        (name, threshold): _score(cluster((entry.item for entry in entries), threshold=threshold), entries)
        for name, entries in sets.items()
        for threshold in thresholds
    }
    pooled = Score(0, 0, 0)
    for held in sets:

        def trained(threshold: float, held: str = held) -> Score:
            return sum((scores[name, threshold] for name in sets if name != held), Score(0, 0, 0))

        fitting = [t for t in thresholds if trained(t).precision >= MIN_PRECISION] or thresholds[-1:]
        chosen = max(fitting, key=lambda t: (trained(t).recall, -t))
        score = scores[held, chosen]
        pooled += score
        print(
            f"held out {held}: threshold {chosen} (train P {trained(chosen).precision:.3f} "
            f"R {trained(chosen).recall:.3f}) -> P {score.precision:.3f} R {score.recall:.3f}"
        )
    print(f"pooled held-out: P {pooled.precision:.3f} R {pooled.recall:.3f} F1 {pooled.f1:.3f}")


def _score(stories: dict[int, int], entries: list[Labeled]) -> Score:
    return _score_pairs(pairs(stories), pairs({entry.item.id: entry.gold for entry in entries}))


def main() -> None:
    """Print every wrong and missed pair, for tuning."""
    if "--loso" in sys.argv:
        leave_one_set_out()
        return
    total = Score(0, 0, 0)
    for name, entries in labeled_sets():
        by_id = {entry.item.id: entry for entry in entries}
        score, wrong, missed = evaluate(entries)
        total += score
        print(f"\n=== {name}: {len(entries)} entries; P {score.precision:.3f} R {score.recall:.3f} F1 {score.f1:.3f}")
        for title, chosen in (("WRONG", wrong), ("MISSED", missed)):
            if "-q" in sys.argv:
                continue
            for a, b in sorted(chosen):
                left, right = by_id[a].item, by_id[b].item
                print(f"  {title} [{by_id[a].gold[:40]} | {by_id[b].gold[:40]}]")
                print(f"     {left.feed}: {left.title}\n     {right.feed}: {right.title}")
    print(f"\nall: P {total.precision:.3f} R {total.recall:.3f} F1 {total.f1:.3f}")


if __name__ == "__main__":
    main()
