"""Load feeds.yaml into typed settings, fast.

A bad file stops the program before anything runs, with a message that names the
file, the key path (``feeds[3].url``) and what is wrong (see `config_model`, the
pydantic schema). Relative paths are resolved against the config file's folder.

Validating with pydantic costs more than everything else a short command does, so
a successfully validated file is cached (keyed by its path and exact bytes) under
``$XDG_CACHE_HOME/aggregator``; an unchanged file then loads without pydantic or
YAML. Any change to the file, or an unreadable cache, means a full validation.
This module knows nothing of HTTP, SQLite or rendering.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator import __version__
from aggregator.errors import ConfigError
from aggregator.models import FeedConfig, FetchLimits, SiteConfig, TagRule

if TYPE_CHECKING:
    from aggregator.config_model import ConfigFile, Defaults, EmailSettings, FeedEntry

DEFAULT_CONFIG_NAME = "feeds.yaml"
CONFIG_ENV = "AGGREGATOR_CONFIG"
CACHE_ENV = "XDG_CACHE_HOME"
DEFAULT_DATABASE = "data/aggregator.db"
DEFAULT_OUTPUT_DIR = "data/public"


#: SMTP ports by security, when email.port is not given.
SMTP_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


@dataclass(frozen=True)
class EmailConfig:
    """Where and when the daily digest is mailed; the password itself stays in the environment."""

    host: str
    port: int
    security: str
    user: str | None
    password_env: str | None
    sender: str
    to: tuple[str, ...]
    time: str
    subject: str
    retries: int
    retry_delay_seconds: float


@dataclass(frozen=True)
class Settings:
    """The validated configuration with paths resolved; what the program runs on."""

    path: Path
    title: str
    site_url: str
    database: Path
    output_dir: Path
    templates_dir: Path | None
    timezone: str
    digest_time: str
    digest_max_stories: int
    feed_per: str
    feed_items: int
    tag_feed_items: int
    concurrency: int
    per_host: int
    render_debounce_seconds: float
    max_jitter_seconds: float
    feeds: tuple[FeedConfig, ...]
    tag_rules: tuple[TagRule, ...]
    database_is_default: bool = True
    email: EmailConfig | None = None

    @property
    def site(self) -> SiteConfig:
        return SiteConfig(
            title=self.title,
            site_url=self.site_url,
            output_dir=str(self.output_dir),
            timezone=self.timezone,
            templates_dir=str(self.templates_dir) if self.templates_dir else None,
            feed_entries=self.feed_items,
            tag_feed_entries=self.tag_feed_items,
            feed_per=self.feed_per,
            digest_max_stories=self.digest_max_stories,
        )

    def feed(self, name: str) -> FeedConfig:
        for feed in self.feeds:
            if feed.name == name:
                return feed
        raise KeyError(name)

    def limits_for(self, feed: FeedConfig) -> FetchLimits:
        return FetchLimits(timeout_seconds=feed.timeout_seconds, max_bytes=feed.max_bytes)


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_NAME)


def load_settings(path: Path | str | None = None) -> Settings:
    """Read, validate and resolve a config file; raise ConfigError on any problem."""
    config_path = Path(path) if path is not None else default_config_path()
    data = _read_bytes(config_path)
    fingerprint = _fingerprint(config_path, data)
    settings = _cached(config_path, fingerprint)
    if settings is None:
        settings = _validate(config_path, data)
        _store_cache(config_path, fingerprint, settings)
    _check_paths(settings)
    return settings


def _read_bytes(path: Path) -> bytes:
    name = str(path)
    if not path.exists():
        raise ConfigError(name, "", "file not found", "create it, or pass --config FILE / set AGGREGATOR_CONFIG")
    if path.is_dir():
        raise ConfigError(name, "", "is a folder, not a file", "pass the path of feeds.yaml")
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(name, "", f"cannot be read: {error.strerror or error}") from None


def _validate(config_path: Path, data: bytes) -> Settings:
    import yaml

    from aggregator.config_model import validate_config

    name = str(config_path)
    try:
        raw = yaml.load(data.decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except UnicodeDecodeError:
        raise ConfigError(name, "", "is not UTF-8 text", "save it as UTF-8") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise ConfigError(name, where, f"YAML syntax error: {error.problem}", "fix the YAML syntax") from None
    except yaml.YAMLError as error:
        raise ConfigError(name, "", f"YAML error: {error}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(name, "", "the top level must be a mapping of keys (title, feeds, ...)")
    return _resolve(config_path, validate_config(config_path, raw))


def _check_paths(settings: Settings) -> None:
    """Checks on the file system, made on every load: a folder may vanish after validation."""
    if not settings.database_is_default and not settings.database.parent.is_dir():
        raise ConfigError(
            str(settings.path),
            "database",
            f"the folder {str(settings.database.parent)!r} does not exist",
            "create it or point database to an existing folder",
        )


def _resolve(config_path: Path, parsed: ConfigFile) -> Settings:
    from aggregator.config_model import tag_rules

    base = config_path.resolve().parent
    return Settings(
        path=config_path,
        title=parsed.title,
        site_url=parsed.site_url,
        database=_resolve_path(base, parsed.database),
        database_is_default=parsed.database == DEFAULT_DATABASE,
        output_dir=_resolve_path(base, parsed.output_dir),
        templates_dir=_resolve_path(base, parsed.templates_dir) if parsed.templates_dir else None,
        timezone=parsed.timezone,
        digest_time=parsed.digest.time,
        digest_max_stories=parsed.digest.max_stories,
        feed_per=parsed.output.per,
        feed_items=parsed.output.feed_items,
        tag_feed_items=parsed.output.tag_feed_items,
        concurrency=parsed.fetch.concurrency,
        per_host=parsed.fetch.per_host,
        render_debounce_seconds=parsed.daemon.render_debounce,
        max_jitter_seconds=parsed.daemon.max_jitter,
        feeds=tuple(_feed_config(feed, parsed.defaults) for feed in parsed.feeds),
        tag_rules=tuple(rule for path, spec in parsed.tags.items() for rule in tag_rules(path, spec)),
        email=_email_config(parsed.email, parsed.digest.time) if parsed.email else None,
    )


def _email_config(email: EmailSettings, digest_time: str) -> EmailConfig:
    return EmailConfig(
        host=email.host,
        port=email.port or SMTP_PORTS[email.security],
        security=email.security,
        user=email.user,
        password_env=email.password_env,
        sender=email.sender,
        to=tuple(email.to),
        time=email.time or digest_time,
        subject=email.subject,
        retries=email.retries,
        retry_delay_seconds=email.retry_delay,
    )


def _resolve_path(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _feed_config(feed: FeedEntry, defaults: Defaults) -> FeedConfig:
    return FeedConfig(
        name=feed.name,
        url=feed.url,
        title=feed.title,
        interval_seconds=feed.interval or defaults.interval,
        timeout_seconds=feed.timeout or defaults.timeout,
        max_bytes=feed.max_bytes or defaults.max_bytes,
        tags=tuple(feed.tags),
    )


# -- the cache of validated settings ------------------------------------------------------


def _fingerprint(config_path: Path, data: bytes) -> str:
    """Changes whenever the file's bytes, its location or this program's version do."""
    digest = hashlib.sha256()
    for part in (__version__.encode(), str(config_path.resolve()).encode(), data):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def _cache_file(config_path: Path) -> Path:
    """One cache file per config file (by absolute path), rewritten when the config changes."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache")
    name = hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()[:24]
    return root / "aggregator" / f"config-{name}.json"


def _cached(config_path: Path, fingerprint: str) -> Settings | None:
    try:
        record = json.loads(_cache_file(config_path).read_text(encoding="utf-8"))
        if record.get("fingerprint") != fingerprint:
            return None
        return _settings_from_json(record["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no cache, or one we cannot trust: validate again


def _store_cache(config_path: Path, fingerprint: str, settings: Settings) -> None:
    path = _cache_file(config_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"fingerprint": fingerprint, "settings": _settings_to_json(settings)}))
        os.replace(temporary, path)
    except OSError:
        pass  # a read-only home is fine: the next start validates again


def _settings_to_json(settings: Settings) -> dict[str, Any]:
    data = asdict(settings)
    for key in ("path", "database", "output_dir", "templates_dir"):
        data[key] = str(data[key]) if data[key] is not None else None
    return data


def _settings_from_json(data: dict[str, Any]) -> Settings:
    fields = {
        **data,
        "path": Path(data["path"]),
        "database": Path(data["database"]),
        "output_dir": Path(data["output_dir"]),
        "templates_dir": Path(data["templates_dir"]) if data["templates_dir"] else None,
    }
    return Settings(
        **{key: value for key, value in fields.items() if key not in ("feeds", "tag_rules", "email")},
        email=EmailConfig(**{**data["email"], "to": tuple(data["email"]["to"])}) if data.get("email") else None,
        feeds=tuple(FeedConfig(**{**feed, "tags": tuple(feed["tags"])}) for feed in data["feeds"]),
        tag_rules=tuple(
            TagRule(
                path=rule["path"],
                names=tuple(rule["names"]),
                tickers=tuple(rule["tickers"]),
                aliases=tuple(rule["aliases"]),
                needs_context=rule["needs_context"],
                replace=rule.get("replace", False),
            )
            for rule in data["tag_rules"]
        ),
    )
