"""feeds.yaml loading: defaults, durations and sizes, and a clear error for every kind of mistake."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aggregator.config import load_settings
from aggregator.config_model import parse_duration, parse_size
from aggregator.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15m", 900), ("2s", 2), ("1h30m", 5400), ("500ms", 0.5), ("1d", 86400), (30, 30), ("2 h", 7200)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["15x", "", "m", "-5m", "0s", True, "15 minutes"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"), [("15MiB", 15 * 1024 * 1024), ("500KB", 500_000), ("1 GiB", 1024**3), (2048, 2048)]
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    path = write(tmp_path, "feeds:\n  - name: one\n    url: https://example.com/feed\n    interval: 10m\n")
    settings = load_settings(path)
    assert settings.database == tmp_path / "data" / "aggregator.db"
    assert settings.output_dir == tmp_path / "data" / "public"
    feed = settings.feeds[0]
    assert (feed.interval_seconds, feed.timeout_seconds, feed.max_bytes) == (600, 20, 15 * 1024 * 1024)
    assert settings.site_url.endswith("/")


def test_tag_extensions_become_rules(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "feeds: []\ntags:\n  Blockchain/Pepe: {names: [Pepe], tickers: [PEPE], aliases: [Pepe News]}\n",
    )
    (rule,) = load_settings(path).tag_rules
    assert (rule.path, rule.names, rule.tickers, rule.aliases) == (
        "Blockchain/Pepe",
        ("Pepe",),
        ("PEPE",),
        ("Pepe News",),
    )


def test_the_default_config_is_valid() -> None:
    settings = load_settings(REPO / "feeds.yaml")
    assert len(settings.feeds) >= 15
    assert all(feed.url.startswith("https://") for feed in settings.feeds)


BAD_CONFIGS = [
    ("unknown key", "feeds: []\nintervall: 5m\n", "intervall", "unknown key"),
    (
        "unknown feed key",
        "feeds:\n  - name: a\n    url: https://a.example/\n    colour: red\n",
        "feeds[0].colour",
        "unknown key",
    ),
    (
        "duplicate name",
        "feeds:\n  - name: a\n    url: https://a.example/\n  - name: a\n    url: https://b.example/\n",
        "feeds[1].name",
        "duplicate feed name 'a'",
    ),
    ("ftp url", "feeds:\n  - name: a\n    url: ftp://a.example/feed\n", "feeds[0].url", "not an http(s) URL"),
    (
        "bad duration",
        "feeds:\n  - name: a\n    url: https://a.example/\n    interval: soon\n",
        "feeds[0].interval",
        "not a duration",
    ),
    ("zero interval", "defaults: {interval: 0s}\nfeeds: []\n", "defaults.interval", "longer than zero"),
    (
        "negative interval",
        "feeds:\n  - name: a\n    url: https://a.example/\n    interval: -5m\n",
        "feeds[0].interval",
        "not a duration",
    ),
    ("bad size", "defaults: {max_bytes: lots}\nfeeds: []\n", "defaults.max_bytes", "not a size"),
    ("missing url", "feeds:\n  - name: a\n", "feeds[0].url", "required"),
    ("wrong type", "feeds: {a: 1}\n", "feeds", "list"),
    ("bad zone", "timezone: Mars/Olympus\nfeeds: []\n", "timezone", "unknown time zone"),
    ("bad digest time", "digest: {time: '25:99'}\nfeeds: []\n", "digest.time", "not a time of day"),
    (
        "bad feed name",
        "feeds:\n  - name: 'a b'\n    url: https://a.example/\n",
        "feeds[0].name",
        "not a valid feed name",
    ),
    ("bad tag path", "feeds: []\ntags:\n  'Blockchain//X': {names: [X]}\n", "tags", "not a tag path"),
    ("yaml syntax", "feeds:\n  - name: a\n    url: [\n", "line 4", "YAML syntax error"),
    ("top level list", "- a\n- b\n", "", "top level must be a mapping"),
    (
        "bad tag name",
        "feeds: []\ntags:\n  Blockchain/Pepe: {names: [$PEPE]}\n",
        "tags.Blockchain/Pepe.names",
        "must start",
    ),
    (
        "needs_context names a stranger",
        "feeds: []\ntags:\n  Blockchain/Pepe: {names: [Pepe], needs_context: [Frog]}\n",
        "tags.Blockchain/Pepe.needs_context",
        "'Frog' is not one of",
    ),
    ("database folder missing", "database: nowhere/at/all.db\nfeeds: []\n", "database", "does not exist"),
]


@pytest.mark.parametrize(("case", "text", "key", "problem"), BAD_CONFIGS, ids=[case[0] for case in BAD_CONFIGS])
def test_bad_config_names_file_key_and_problem(tmp_path: Path, case: str, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert str(path) in message
    assert key in message
    assert problem in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_every_problem_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "feeds:\n  - name: a\n    url: ftp://x/\n  - name: b\n    url: https://b.example/\n    interval: x\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "feeds[0].url" in message and "feeds[1].interval" in message


def test_a_cached_config_is_the_same_and_follows_edits(tmp_path: Path) -> None:
    path = write(tmp_path, "feeds:\n  - name: one\n    url: https://example.com/feed\n")
    first = load_settings(path)
    assert load_settings(path) == first  # from the cache
    path.write_text("feeds:\n  - name: one\n    url: ftp://example.com/feed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"feeds\[0\]\.url"):
        load_settings(path)
    path.write_text("feeds:\n  - name: two\n    url: https://example.com/feed\n    tags: [DeFi]\n", encoding="utf-8")
    assert [(feed.name, feed.tags) for feed in load_settings(path).feeds] == [("two", ("DeFi",))]


def test_a_damaged_cache_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "feeds:\n  - name: one\n    url: https://example.com/feed\n")
    load_settings(path)
    for cached in Path(os.environ["XDG_CACHE_HOME"]).glob("aggregator/*.json"):
        cached.write_text("{not json", encoding="utf-8")
    assert load_settings(path).feeds[0].name == "one"
