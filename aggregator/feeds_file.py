"""Edit feeds.yaml in place: append feeds to its `feeds` list, or take one out, keeping every other byte.

A person's feeds.yaml has comments, an order and a layout worth keeping, so the file is never
written out again from a parsed copy. ruamel.yaml's round-trip loader tells where the `feeds`
list, its items and the next top-level key sit (line and column); ruamel.yaml also renders the
new items, so names, titles and tags are quoted wherever YAML 1.1 (what the config loader reads)
needs it; and the text is spliced in the list's own indentation and line endings.

The result is checked twice before it replaces the file: read back, it must be the old data
with exactly the intended change; and the project's config loader must accept it. Only then is
it renamed over feeds.yaml (atomically, keeping the file's permissions); any failed check leaves
feeds.yaml as it was. This module also names new feeds (unique slugs) and tells whether two feed
URLs are the same feed. It knows nothing of HTTP, OPML or SQLite.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from slugify import slugify

from aggregator.config import load_settings
from aggregator.errors import ConfigError
from aggregator.models import FeedConfig

FEEDS_KEY = "feeds"
# The project's own layout ("feeds:" then "  - name: x" / "    url: y") for a list this module starts.
NEW_LIST_DASH_COLUMN = 2
MAX_NAME_LENGTH = 40
FALLBACK_NAME = "feed"
# ruamel.yaml folds lines longer than this; a new item is always one line per key.
RENDER_WIDTH = 4096
_EMPTY_VALUE_RE = re.compile(
    r"^(?P<key>[ \t]*feeds[ \t]*:)(?:[ \t]+(?:~|null|Null|NULL|\[[ \t]*\]))?(?P<gap>[ \t]*)(?P<comment>#.*)?$"
)
_KEY_ONLY_RE = re.compile(r"^(?P<key>[ \t]*feeds[ \t]*:)(?P<gap>[ \t]*)(?P<comment>#.*)?$")
# The rule config_model applies to feed names (checked here before pydantic is loaded).
_FEED_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# -- names and URLs -------------------------------------------------------------------------


def feed_url_key(url: str) -> str:
    """What two feed URLs share when they are the same feed: the canonical link, http and https alike."""
    from aggregator.parse import canonical_link  # feedparser is slow to import; only add and import need this

    canonical = canonical_link(url)
    _scheme, separator, rest = canonical.partition("://")
    return rest if separator else canonical


def is_feed_name(name: str) -> bool:
    return bool(_FEED_NAME_RE.match(name))


def name_for(title: str | None, url: str, taken: Collection[str]) -> str:
    """A new feed's name: a slug of its title (else of its host), unique among `taken` in any case."""
    wanted = slugify(title or "", max_length=MAX_NAME_LENGTH, word_boundary=True)
    if not wanted:
        host = (urlsplit(url).hostname or "").removeprefix("www.")
        wanted = slugify(host.rpartition(".")[0] or host, max_length=MAX_NAME_LENGTH, word_boundary=True)
    return unique_name(wanted or FALLBACK_NAME, taken)


def unique_name(wanted: str, taken: Collection[str]) -> str:
    """`wanted`, or `wanted-2`, `wanted-3`, ... whichever is not taken (compared in lower case)."""
    lowered = {name.lower() for name in taken}
    name, number = wanted, 1
    while name.lower() in lowered:
        number += 1
        name = f"{wanted}-{number}"
    return name


# -- editing --------------------------------------------------------------------------------


def add_feeds(config_path: Path, feeds: Sequence[FeedConfig]) -> None:
    """Append `feeds` (name, url, title if set, tags if any) to the end of the `feeds` list."""
    if not feeds:
        return
    path = config_path.resolve()
    text = _read_text(path)
    document = _round_trip(path, text)
    new_text = _appended(path, text, document, feeds)
    expected = _plain(document) or {}
    expected[FEEDS_KEY] = [*(expected.get(FEEDS_KEY) or []), *(_item(feed) for feed in feeds)]
    _replace_checked(path, text, new_text, expected)


def remove_feed(config_path: Path, name: str) -> None:
    """Take the feed named `name` out of the `feeds` list (its lines only: comments around it stay)."""
    path = config_path.resolve()
    text = _read_text(path)
    document = _round_trip(path, text)
    items = document.get(FEEDS_KEY) if isinstance(document, CommentedMap) else None
    names = [item.get("name") for item in items or () if isinstance(item, CommentedMap)]
    if not isinstance(items, CommentedSeq) or name not in names:
        raise ConfigError(str(config_path), FEEDS_KEY, f"has no feed named {name!r}", _did_you_mean(name, names))
    index = names.index(name)
    new_text = _removed(path, text, document, items, index)
    expected = _plain(document)
    del expected[FEEDS_KEY][index]
    _replace_checked(path, text, new_text, expected)


def _did_you_mean(name: str, names: Sequence[object]) -> str:
    close = get_close_matches(name, [str(other) for other in names], n=3)
    return "did you mean " + " or ".join(repr(other) for other in close) + "?" if close else "see `aggregator check`"


def _item(feed: FeedConfig) -> dict[str, Any]:
    """The keys written for a new feed; defaults (interval, timeout, max_bytes) are left to the file's `defaults`."""
    item: dict[str, Any] = {"name": feed.name, "url": feed.url}
    if feed.title:
        item["title"] = feed.title
    if feed.tags:
        item["tags"] = list(feed.tags)
    return item


# -- reading ----------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found", "create it, or pass --config FILE") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "", "is not UTF-8 text", "save it as UTF-8") from None
    except OSError as error:
        raise ConfigError(str(path), "", f"cannot be read: {error.strerror or error}") from None


def _round_trip(path: Path, text: str) -> Any:
    """The document with positions (ruamel.yaml's round-trip types), or a ConfigError."""
    try:
        return YAML(typ="rt").load(text)
    except YAMLError as error:
        raise ConfigError(str(path), "", f"YAML error: {error}", "fix the YAML syntax first") from None


def _plain(value: Any) -> Any:
    """A round-trip document as plain dicts and lists, to compare one with another."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _lines(text: str) -> list[str]:
    """The text's lines, each with its line break; split on \\n only, as ruamel.yaml counts lines."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


@dataclass(frozen=True)
class _Layout:
    """Where the block list of feeds sits and how it is indented."""

    dash_column: int
    content_column: int
    end: int  # the line after its last item, before the blank lines and comments that lead to what follows


def _layout(lines: Sequence[str], document: CommentedMap, items: CommentedSeq) -> _Layout:
    dash_line, dash_column = items.lc.line, items.lc.col
    content_line, content_column = items.lc.item(0)
    if content_line != dash_line:
        content_column = dash_column + 2
    keys = list(document)
    following = keys[keys.index(FEEDS_KEY) + 1 :]
    end = document.lc.key(following[0])[0] if following else len(lines)
    return _Layout(dash_column, content_column, _trim_back(lines, dash_line + 1, end, dash_column))


def _trim_back(lines: Sequence[str], floor: int, end: int, dash_column: int) -> int:
    """Move `end` back over blank lines and over comments no deeper than the dashes (they lead to what follows)."""
    while end > floor:
        line = lines[end - 1]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if stripped and not (stripped.startswith("#") and indent <= dash_column):
            break
        end -= 1
    return end


def _dash_line(lines: Sequence[str], content_line: int, dash_column: int) -> int:
    """The line holding the dash of the list item whose content starts on `content_line`."""
    for number in range(content_line, -1, -1):
        line = lines[number]
        if line[dash_column : dash_column + 1] == "-" and not line[:dash_column].strip():
            return number
    return content_line


# -- splicing ---------------------------------------------------------------------------------


def _appended(path: Path, text: str, document: Any, feeds: Sequence[FeedConfig]) -> str:
    lines = _lines(text)
    newline = "\r\n" if "\r\n" in text else "\n"
    items = document.get(FEEDS_KEY) if isinstance(document, CommentedMap) else None
    if document is None or (isinstance(document, CommentedMap) and FEEDS_KEY not in document):
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += newline
        block = _rendered(feeds, NEW_LIST_DASH_COLUMN, NEW_LIST_DASH_COLUMN + 2, newline)
        return "".join([*lines, f"{FEEDS_KEY}:{newline}", *block])
    if not isinstance(document, CommentedMap):
        raise ConfigError(str(path), "", "the top level must be a mapping of keys (title, feeds, ...)")
    if isinstance(items, CommentedSeq) and items and not items.fa.flow_style():
        layout = _layout(lines, document, items)
        block = _rendered(feeds, layout.dash_column, layout.content_column, newline)
        return "".join([*lines[: layout.end], *block, *lines[layout.end :]])
    key_line, key_column = document.lc.key(FEEDS_KEY)
    match = _EMPTY_VALUE_RE.match(lines[key_line].rstrip("\r\n"))
    if (items is not None and not (isinstance(items, CommentedSeq) and not items)) or match is None:
        raise ConfigError(
            str(path),
            FEEDS_KEY,
            "is not written as a block list, so it cannot be edited safely",
            "write one '- name: ...' item per line under 'feeds:', then run the command again",
        )
    comment = match["gap"] + match["comment"] if match["comment"] else ""
    block = _rendered(feeds, key_column + 2, key_column + 4, newline)
    return "".join([*lines[:key_line], match["key"] + comment + newline, *block, *lines[key_line + 1 :]])


def _removed(path: Path, text: str, document: CommentedMap, items: CommentedSeq, index: int) -> str:
    lines = _lines(text)
    if items.fa.flow_style():
        raise ConfigError(
            str(path),
            FEEDS_KEY,
            "is not written as a block list, so it cannot be edited safely",
            "remove the feed by hand",
        )
    layout = _layout(lines, document, items)
    start = _dash_line(lines, items.lc.item(index)[0], layout.dash_column)
    if index + 1 < len(items):
        following = _dash_line(lines, items.lc.item(index + 1)[0], layout.dash_column)
        end = _trim_back(lines, start + 1, following, layout.dash_column)
    else:
        end = layout.end
    kept = [*lines[:start], *lines[end:]]
    if len(items) == 1:  # the list becomes empty: say so, or the config would read `feeds:` as null
        key_line = document.lc.key(FEEDS_KEY)[0]
        match = _KEY_ONLY_RE.match(lines[key_line].rstrip("\r\n"))
        if match is None:
            raise ConfigError(str(path), FEEDS_KEY, "cannot be emptied safely", "remove the feed by hand")
        newline = "\r\n" if lines[key_line].endswith("\r\n") else "\n"
        comment = match["gap"] + match["comment"] if match["comment"] else ""
        kept[key_line] = f"{match['key']} []{comment}{newline}"
    return "".join(kept)


def _rendered(feeds: Sequence[FeedConfig], dash_column: int, content_column: int, newline: str) -> list[str]:
    """The lines of the new list items, in the list's indentation."""
    writer = YAML(typ="rt")
    writer.version = (1, 1)  # quote what YAML 1.1 would read as something else: yes, no, on, 1e3, ~
    writer.width = RENDER_WIDTH
    lines: list[str] = []
    for feed in feeds:
        item = CommentedMap()
        for key, value in _item(feed).items():
            if isinstance(value, list):
                value = CommentedSeq(value)
                value.fa.set_flow_style()
            item[key] = value
        buffer = io.StringIO()
        writer.dump(item, buffer)
        body = [line for line in buffer.getvalue().splitlines() if line not in ("%YAML 1.1", "---", "...")]
        for number, line in enumerate(body):
            if number == 0:
                prefix = " " * dash_column + "-" + " " * (content_column - dash_column - 1)
            else:
                prefix = " " * content_column
            lines.append(prefix + line + newline)
    return lines


# -- replacing ----------------------------------------------------------------------------------


def _replace_checked(path: Path, old_text: str, new_text: str, expected: Any) -> None:
    """Replace `path` with `new_text` if it reads as `expected` and the config loader accepts it."""
    if _plain(_round_trip(path, new_text)) != expected:
        raise ConfigError(
            str(path), "", "could not be edited safely (its layout is unusual)", "make the change by hand"
        )
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(temporary_name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(new_text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        try:
            load_settings(temporary)
        except ConfigError as error:
            raise ConfigError(str(path), error.key, f"the change would make it invalid: {error.problem}") from None
        if path.read_bytes() != old_text.encode("utf-8"):
            raise ConfigError(str(path), "", "changed while it was being edited", "run the command again")
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
