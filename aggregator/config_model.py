"""The schema of feeds.yaml (pydantic) and its error messages.

Validation only: `config` reads the file, caches the result and resolves paths;
this module turns the YAML data into a `ConfigFile` or a `ConfigError` that names
the file, the key path (``feeds[3].url``) and what is wrong. It is imported only
when a config file has to be validated (pydantic is slow to import).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import time as dt_time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aggregator.config import DEFAULT_DATABASE, DEFAULT_OUTPUT_DIR
from aggregator.errors import ConfigError
from aggregator.models import TagRule

DEFAULT_INTERVAL_SECONDS = 15 * 60
DEFAULT_TIMEOUT_SECONDS = 20.0
DEFAULT_MAX_BYTES = 15 * 1024 * 1024
DEFAULT_RENDER_DEBOUNCE_SECONDS = 30.0
DEFAULT_MAX_JITTER_SECONDS = 30.0
MIN_INTERVAL_SECONDS = 1.0
MAX_TIMEOUT_SECONDS = 600.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_FEED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
DEFAULT_EMAIL_SUBJECT = "{title}: {date}"
#: The placeholders an email subject may use.
SUBJECT_FIELDS = ("title", "date", "stories")
DEFAULT_EMAIL_RETRIES = 4
DEFAULT_EMAIL_RETRY_DELAY_SECONDS = 300.0


def parse_duration(value: object) -> float:
    """Seconds from "15m", "1h30m", "2s", "500ms" or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 15m, 2h or 30s")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not text or "".join(n + u for n, u in parts).lower() != text.lower():
            raise ValueError(f"{value!r} is not a duration (use e.g. 15m, 2h, 30s, 1h30m)")
        seconds = sum(float(number) * _DURATION_UNITS[unit.lower()] for number, unit in parts)
    else:
        raise ValueError("expected a duration like 15m, 2h or 30s")
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from "15MiB", "500KB", "2 GiB" or a bare number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 15MiB or 500KB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a size (use e.g. 15MiB, 500KB, 1GiB)")
        size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
    else:
        raise ValueError("expected a size like 15MiB or 500KB")
    if size <= 0:
        raise ValueError(f"{value!r} must be larger than zero")
    return size


def check_time_of_day(value: object) -> str:
    """A time of day as "HH:MM" or "HH:MM:SS"."""
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 07:00 as the sexagesimal number 420.
        value = f"{value // 60:02d}:{value % 60:02d}"
    if not isinstance(value, str):
        raise ValueError('expected a time of day like "07:00"')
    try:
        dt_time.fromisoformat(value)
    except ValueError:
        raise ValueError(f'{value!r} is not a time of day (use HH:MM, e.g. "07:00")') from None
    return value


def check_email_address(value: str) -> str:
    """One address, bare or with a display name: `digest@example.com`, `Digest <digest@example.com>`."""
    from email.utils import getaddresses

    parsed = getaddresses([value])
    address = parsed[0][1] if len(parsed) == 1 else ""
    local, _, domain = address.rpartition("@")
    if any(ord(char) < 32 or char == "\x7f" for char in value) or not local or "." not in domain or " " in address:
        raise ValueError(f'{value!r} is not an email address (use name@example.com or "Name <name@example.com>")')
    return value.strip()


def check_subject(value: str) -> str:
    """A subject template whose placeholders are all known ({title}, {date}, {stories})."""
    import string

    if any(ord(char) < 32 for char in value):
        raise ValueError("must be one line without control characters")
    try:
        names = [name for _text, name, _spec, _conversion in string.Formatter().parse(value) if name is not None]
    except ValueError as error:
        raise ValueError(f"{value!r} is not a subject template ({error}; write {{{{ and }}}} for braces)") from None
    for name in names:
        if name not in SUBJECT_FIELDS:
            known = ", ".join("{" + field + "}" for field in SUBJECT_FIELDS)
            raise ValueError(f"unknown placeholder {{{name}}} (use {known})")
    try:
        value.format(title="Title", date="2024-01-31", stories=1)
    except (ValueError, IndexError, KeyError) as error:
        raise ValueError(f"{value!r} is not a subject template ({error})") from None
    return value


def _one_or_a_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(parse_duration)]
Address = Annotated[str, AfterValidator(check_email_address)]
Size = Annotated[int, BeforeValidator(parse_size)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Strict):
    interval: Duration = DEFAULT_INTERVAL_SECONDS
    timeout: Duration = DEFAULT_TIMEOUT_SECONDS
    max_bytes: Size = DEFAULT_MAX_BYTES

    @field_validator("interval")
    @classmethod
    def _sane_interval(cls, value: float) -> float:
        return check_interval(value)

    @field_validator("timeout")
    @classmethod
    def _sane_timeout(cls, value: float) -> float:
        return check_timeout(value)


class DigestSettings(_Strict):
    time: str = "07:00"
    max_stories: int = Field(default=60, gt=0)

    @field_validator("time", mode="before")
    @classmethod
    def _valid_time(cls, value: object) -> str:
        return check_time_of_day(value)


class DaemonSettings(_Strict):
    render_debounce: Duration = DEFAULT_RENDER_DEBOUNCE_SECONDS
    max_jitter: Duration = DEFAULT_MAX_JITTER_SECONDS


class OutputSettings(_Strict):
    per: Literal["story", "entry"] = "story"
    feed_items: int = Field(default=100, gt=0, le=10_000)
    tag_feed_items: int = Field(default=50, gt=0, le=10_000)


class FetchSettings(_Strict):
    concurrency: int = Field(default=32, ge=1, le=256)
    per_host: int = Field(default=16, ge=1, le=64)


class EmailSettings(_Strict):
    """The optional `email:` section: where and when the daily digest is mailed."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    host: str
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    user: str | None = None
    password_env: str | None = None
    sender: str = Field(alias="from")
    to: Annotated[list[Address], BeforeValidator(_one_or_a_list)]
    time: str | None = None
    subject: str = DEFAULT_EMAIL_SUBJECT
    retries: int = Field(default=DEFAULT_EMAIL_RETRIES, ge=0, le=20)
    retry_delay: Duration = DEFAULT_EMAIL_RETRY_DELAY_SECONDS

    @model_validator(mode="before")
    @classmethod
    def _no_password_in_the_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise _KeyedError(
                "email.password",
                "the SMTP password does not belong in feeds.yaml",
                "put it in an environment variable and name that variable in email.password_env",
            )
        return data

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        host = value.strip()
        if host.count(":") == 1:
            raise ValueError(f"{value!r}: give the port in email.port, not in the host")
        if not host or any(char.isspace() or char in "/@" for char in host):
            raise ValueError(f"{value!r} is not a host name (use e.g. smtp.example.com)")
        return host

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        return check_email_address(value)

    @field_validator("to")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one address")
        return value

    @field_validator("password_env")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name (use e.g. SMTP_PASSWORD)")
        return value

    @field_validator("time", mode="before")
    @classmethod
    def _valid_time(cls, value: object) -> str | None:
        return None if value is None else check_time_of_day(value)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return check_subject(value)

    @model_validator(mode="after")
    def _login_is_complete_and_encrypted(self) -> EmailSettings:
        if self.user and not self.password_env:
            raise _KeyedError(
                "email.password_env", "is required when email.user is set", "name the variable holding the password"
            )
        if self.password_env and not self.user:
            raise _KeyedError("email.user", "is required when email.password_env is set", "add the SMTP login name")
        if self.user and self.security == "none" and self.host not in _LOOPBACK_HOSTS:
            raise _KeyedError(
                "email.security",
                "'none' would send the SMTP password unencrypted",
                "use starttls or ssl, or remove user for a relay that needs no login",
            )
        return self


class FeedEntry(_Strict):
    name: str
    url: str
    title: str | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    max_bytes: Size | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _FEED_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid feed name (letters, digits, '.', '_' and '-', "
                "starting with a letter or digit)"
            )
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_feed_url(value)

    @field_validator("tags")
    @classmethod
    def _tag_paths(cls, value: list[str]) -> list[str]:
        return [check_tag_path(tag) for tag in value]

    @field_validator("interval")
    @classmethod
    def _sane_interval(cls, value: float | None) -> float | None:
        return None if value is None else check_interval(value)

    @field_validator("timeout")
    @classmethod
    def _sane_timeout(cls, value: float | None) -> float | None:
        return None if value is None else check_timeout(value)


class TagSpec(_Strict):
    names: list[str] = Field(default_factory=list)
    tickers: list[str] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)
    needs_context: bool | list[str] = False
    replace: bool = False


class ConfigFile(_Strict):
    title: str = "Crypto News Digest"
    site_url: str = "http://localhost:8080/"
    database: str = DEFAULT_DATABASE
    output_dir: str = DEFAULT_OUTPUT_DIR
    templates_dir: str | None = None
    timezone: str = "UTC"
    defaults: Defaults = Field(default_factory=Defaults)
    digest: DigestSettings = Field(default_factory=DigestSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    email: EmailSettings | None = None
    feeds: list[FeedEntry] = Field(default_factory=list)
    tags: dict[str, TagSpec] = Field(default_factory=dict)

    @field_validator("site_url")
    @classmethod
    def _site_url(cls, value: str) -> str:
        check_feed_url(value)
        return value if value.endswith("/") else value + "/"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like UTC or Europe/Berlin)") from None
        return value

    @field_validator("tags")
    @classmethod
    def _tag_keys(cls, value: dict[str, TagSpec]) -> dict[str, TagSpec]:
        for path, spec in value.items():
            check_tag_path(path)
            try:
                tag_rules(path, spec)
            except ValueError as error:
                sub_key, _, problem = str(error).partition(": ")
                raise _KeyedError(f"tags.{path}.{sub_key}", problem) from None
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> ConfigFile:
        seen: dict[str, int] = {}
        for index, feed in enumerate(self.feeds):
            if feed.name in seen:
                raise _KeyedError(
                    f"feeds[{index}].name",
                    f"duplicate feed name {feed.name!r} (also feeds[{seen[feed.name]}].name)",
                    "feed names must be unique",
                )
            seen[feed.name] = index
        return self


class _KeyedError(ValueError):
    """A model-level problem that still knows which key it is about."""

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem
        self.fix = fix


def check_feed_url(value: str) -> str:
    """Accept only absolute http(s) URLs with a host."""
    from urllib.parse import urlsplit

    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https"):
        scheme = parts.scheme or "none"
        raise ValueError(f"{value!r} is not an http(s) URL (scheme: {scheme}; use an http:// or https:// address)")
    if not parts.netloc:
        raise ValueError(f"{value!r} has no host (write the full address, e.g. https://example.com/feed)")
    return value.strip()


def check_interval(seconds: float) -> float:
    if seconds < MIN_INTERVAL_SECONDS:
        raise ValueError(f"must be at least {MIN_INTERVAL_SECONDS:g} s")
    return seconds


def check_timeout(seconds: float) -> float:
    if seconds > MAX_TIMEOUT_SECONDS:
        raise ValueError(f"must be at most {MAX_TIMEOUT_SECONDS:g} s")
    return seconds


def check_tag_path(value: str) -> str:
    segments = [" ".join(part.split()) for part in value.split("/")]
    if not value.strip() or any(not segment for segment in segments):
        raise ValueError(f"{value!r} is not a tag path (use e.g. Blockchain/Binance)")
    return "/".join(segments)


def _key_path(location: Sequence[int | str]) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + part
    return text


REFERENCE = "the feeds.yaml reference in README.md"


def _config_error(path: Path, error: ValidationError) -> ConfigError:
    problems: list[tuple[str, str, str]] = []
    for detail in error.errors():
        location = [part for part in detail["loc"] if not _is_validator_tag(part)]
        key = _key_path(location)
        context_error = (detail.get("ctx") or {}).get("error")
        if isinstance(context_error, _KeyedError):
            key, problem, fix = context_error.key, context_error.problem, context_error.fix
        elif detail["type"] == "extra_forbidden":
            problem, fix = f"unknown key {location[-1]!r}", _allowed_keys_hint(location)
        elif detail["type"] == "missing":
            problem, fix = "is required but missing", f"add it; see {REFERENCE}"
        elif detail["type"].endswith("_type") or detail["type"].endswith("_parsing"):
            problem, fix = _clean_message(detail["msg"]), f"see {REFERENCE} for the expected form"
        else:
            problem, fix = _clean_message(detail["msg"]), ""
        problems.append((key, problem, fix))
    key, problem, fix = problems[0]
    result = ConfigError(str(path), key, problem, fix)
    if len(problems) > 1:
        lines = [result.message] + [str(ConfigError(str(path), k, p, f)) for k, p, f in problems[1:]]
        result.message = "\n".join(lines)
    return result


def _is_validator_tag(part: int | str) -> bool:
    # pydantic adds the validator's name (e.g. "function-before[...]") to some locations.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _clean_message(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message[:1].lower() + message[1:]


_ALLOWED_KEYS: dict[str, type[BaseModel]] = {
    "": ConfigFile,
    "defaults": Defaults,
    "digest": DigestSettings,
    "fetch": FetchSettings,
    "daemon": DaemonSettings,
    "email": EmailSettings,
    "feeds": FeedEntry,
    "tags": TagSpec,
}


def _allowed_keys_hint(location: Sequence[int | str]) -> str:
    section = str(location[0]) if len(location) > 1 else ""
    model = _ALLOWED_KEYS.get(section)
    if model is None:
        return ""
    return "allowed keys: " + ", ".join(field.alias or name for name, field in model.model_fields.items())


def validate_config(path: Path, raw: dict[str, Any]) -> ConfigFile:
    """The YAML data as a ConfigFile; every problem found becomes one ConfigError."""
    try:
        return ConfigFile.model_validate(raw)
    except ValidationError as error:
        raise _config_error(path, error) from None


def tag_rules(path: str, spec: TagSpec) -> tuple[TagRule, ...]:
    return TagRule.from_spec(
        check_tag_path(path), spec.names, spec.tickers, spec.aliases, spec.needs_context, spec.replace
    )
