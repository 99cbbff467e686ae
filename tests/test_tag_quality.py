"""How well the built-in taxonomy tags real-looking news: precision and recall on labeled sets.

tests/data/tagging/labeled-dev.yaml is what the tagger is tuned against; labeled-holdout.yaml
is only checked afterwards, so its numbers say how the rules generalize. Each item carries a
`gold` tag set written by the definitions in the files' header. Scores are micro-averaged
over (item, tag) pairs, apart for entity tags (Blockchain, Blockchain/..., Regulation/SEC,
Regulation/CFTC) and topic tags (Markets, Regulation, Security, ...), because the two fail in
different ways: entities by word collisions, topics by vocabulary.

Run with `-s` to see the report; a failing assertion lists every false positive and false
negative as (title, tag).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from aggregator.tagging import Taxonomy, rollup

DATA = Path(__file__).parent / "data" / "tagging"
SETS = {"dev": DATA / "labeled-dev.yaml", "holdout": DATA / "labeled-holdout.yaml"}

REGULATOR_TAGS = frozenset({"Regulation/SEC", "Regulation/CFTC"})
TOPIC_TAGS = frozenset({"Markets", "Regulation", "Security", "DeFi", "NFT", "Mining", "ETF", "CBDC"})
GROUPS = ("entity", "topic")

# group -> (minimum precision, minimum recall)
THRESHOLDS = {"entity": (0.97, 0.93), "topic": (0.85, 0.75)}
MIN_ITEMS = 240
MIN_TRAP_SHARE = 1 / 3


def tag_group(tag: str) -> str:
    """Which score a tag counts in: "entity" or "topic"."""
    if tag == "Blockchain" or tag.startswith("Blockchain/") or tag in REGULATOR_TAGS:
        return "entity"
    if tag in TOPIC_TAGS:
        return "topic"
    raise ValueError(f"tag {tag!r} is neither an entity nor a topic tag")


@dataclass
class Score:
    """Counts of one group of tags over a set of items."""

    true_positives: int = 0
    false_positives: list[tuple[str, str]] = field(default_factory=list)  # (title, tag)
    false_negatives: list[tuple[str, str]] = field(default_factory=list)

    @property
    def precision(self) -> float:
        found = self.true_positives + len(self.false_positives)
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        wanted = self.true_positives + len(self.false_negatives)
        return self.true_positives / wanted if wanted else 1.0

    def add(self, other: Score) -> None:
        self.true_positives += other.true_positives
        self.false_positives.extend(other.false_positives)
        self.false_negatives.extend(other.false_negatives)

    def mistakes(self) -> str:
        lines = [f"  false positive: {title!r} -> {tag}" for title, tag in self.false_positives]
        lines += [f"  false negative: {title!r} -> {tag}" for title, tag in self.false_negatives]
        return "\n".join(lines) or "  (none)"


@cache
def load_items(name: str) -> tuple[dict[str, Any], ...]:
    document = yaml.safe_load(SETS[name].read_text(encoding="utf-8"))
    return tuple(document["items"])


@cache
def taxonomy() -> Taxonomy:
    return Taxonomy.load()


def predict(item: dict[str, Any]) -> frozenset[str]:
    return taxonomy().tags_for(item["title"], item.get("summary") or "", item.get("categories") or [])


@cache
def scores(name: str) -> dict[str, Score]:
    """The entity and topic scores of one labeled set ("dev", "holdout") or of "combined"."""
    if name == "combined":
        combined = {group: Score() for group in GROUPS}
        for part in SETS:
            for group, score in scores(part).items():
                combined[group].add(score)
        return combined
    result = {group: Score() for group in GROUPS}
    for item in load_items(name):
        gold = frozenset(item["gold"])
        predicted = predict(item)
        for tag in gold | predicted:
            score = result[tag_group(tag)]
            if tag in gold and tag in predicted:
                score.true_positives += 1
            elif tag in predicted:
                score.false_positives.append((item["title"], tag))
            else:
                score.false_negatives.append((item["title"], tag))
    return result


def report() -> str:
    """A small table of precision and recall per set and group."""
    lines = [f"{'set':<10}{'group':<8}{'precision':>10}{'recall':>8}{'TP':>6}{'FP':>5}{'FN':>5}"]
    for name in (*SETS, "combined"):
        for group, score in scores(name).items():
            lines.append(
                f"{name:<10}{group:<8}{score.precision:>10.3f}{score.recall:>8.3f}"
                f"{score.true_positives:>6}{len(score.false_positives):>5}{len(score.false_negatives):>5}"
            )
    return "\n".join(lines)


# --- the labeled sets themselves -------------------------------------------------------------


def test_labeled_sets_are_large_and_tricky_enough() -> None:
    items = [item for name in SETS for item in load_items(name)]
    traps = sum(item["kind"] == "trap" for item in items)
    assert len(items) >= MIN_ITEMS
    assert traps >= MIN_TRAP_SHARE * len(items), f"only {traps} of {len(items)} items are traps"
    for name in SETS:
        assert load_items(name), f"{name} set is empty"


@pytest.mark.parametrize("name", SETS)
def test_labeled_items_are_well_formed(name: str) -> None:
    paths = set(taxonomy().paths)
    titles: set[str] = set()
    for item in load_items(name):
        title = item["title"]
        assert set(item) <= {"title", "summary", "categories", "kind", "lang", "gold"}, title
        assert item["kind"] in {"trap", "normal"}, title
        assert item["lang"] in {"en", "de", "es"}, title
        gold = frozenset(item["gold"])
        assert rollup(gold) == gold, f"{title!r}: gold misses a parent tag"
        assert gold <= paths, f"{title!r}: gold tags outside the taxonomy: {sorted(gold - paths)}"
        assert title not in titles, f"{title!r} appears twice"
        titles.add(title)


def test_dev_and_holdout_do_not_share_titles() -> None:
    dev = {item["title"] for item in load_items("dev")}
    assert dev.isdisjoint(item["title"] for item in load_items("holdout"))


# --- the scores -----------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("name", [*SETS, "combined"])
def test_precision_and_recall(name: str, group: str) -> None:
    score = scores(name)[group]
    min_precision, min_recall = THRESHOLDS[group]
    message = f"{name} {group} tags\n{report()}\n{score.mistakes()}"
    assert score.precision >= min_precision, message
    assert score.recall >= min_recall, message


def test_print_report() -> None:
    """Shown with `pytest -s`: the numbers and every remaining mistake."""
    print("\n" + report())
    for name in SETS:
        for group, score in scores(name).items():
            print(f"\n{name} {group} mistakes:\n{score.mistakes()}")
