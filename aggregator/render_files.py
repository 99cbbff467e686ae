"""Where render's outputs land on disk: atomic writes, unchanged files left alone, and the render state.

`write_atomic` replaces a file so that a reader (a browser, `serve`, a feed reader) sees the
old file or the new one, never half. `OutputWriter` counts what it wrote and skips files whose
bytes are already there. `RenderState` is what the last render covered (a dotfile beside the
outputs), which lets the next one write only what changed. No templates, no SQL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from aggregator import __version__
from aggregator.models import ChangeMarker, SiteConfig

RENDER_STATE_FILE = ".render-state.json"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old file or the new one, never half.

    Writes a temporary file in the same directory, fsyncs it and renames it over
    `path`; creates missing parent directories. Keeps an existing file's permission
    bits, else uses 0644 so a web server running as another user can read it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


class OutputWriter:
    """Writes output files atomically, skipping those whose bytes are already on disk."""

    def __init__(self) -> None:
        self.written = 0
        self.unchanged = 0

    def publish(self, path: Path, data: bytes) -> bool:
        """Write `data` to `path` unless it holds them already; whether it was written."""
        if _same_bytes(path, data):
            self.unchanged += 1
            return False
        write_atomic(path, data)
        self.written += 1
        return True

    def count(self, written: bool) -> None:
        """Count a file another process published."""
        if written:
            self.written += 1
        else:
            self.unchanged += 1


@dataclass(frozen=True)
class RenderState:
    """What the last render covered, kept beside the outputs (a dotfile: `serve` never shows it).

    Besides the change marker: the days and tags written, each day's (stories, reports) for
    the archive, the day it was rendered, and each outlet's state mark and 14-day total for
    the outlets index, so that an incremental render needs no query over the whole archive.
    """

    fingerprint: str
    marker: ChangeMarker
    days: frozenset[date]
    tags: frozenset[str] = frozenset()
    day_counts: dict[date, tuple[int, int]] = field(default_factory=dict)
    today: date | None = None
    outlets: dict[str, tuple[str, int]] = field(default_factory=dict)

    @classmethod
    def load(cls, out: Path, fingerprint: str) -> RenderState | None:
        """The state the last render left in `out`, if it was made with the same `fingerprint`."""
        try:
            data = json.loads((out / RENDER_STATE_FILE).read_text(encoding="utf-8"))
            if data.get("fingerprint") != fingerprint:
                return None
            return cls(
                fingerprint=fingerprint,
                marker=ChangeMarker(int(data["last_id"]), str(data["last_rewrite"]), str(data["last_story"])),
                days=frozenset(date.fromisoformat(day) for day in data["days"]),
                tags=frozenset(str(tag) for tag in data["tags"]),
                day_counts={
                    date.fromisoformat(day): (int(stories), int(reports))
                    for day, (stories, reports) in data["day_counts"].items()
                },
                today=date.fromisoformat(data["today"]),
                outlets={str(name): (str(mark), int(total)) for name, (mark, total) in data["outlets"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no state, or one we cannot trust: render everything

    def save(self, out: Path) -> None:
        data = {
            "fingerprint": self.fingerprint,
            "last_id": self.marker.last_id,
            "last_rewrite": self.marker.last_rewrite,
            "last_story": self.marker.last_story,
            "days": sorted(day.isoformat() for day in self.days),
            "tags": sorted(self.tags),
            "day_counts": {day.isoformat(): list(counts) for day, counts in sorted(self.day_counts.items())},
            "today": (self.today or date.min).isoformat(),
            "outlets": {name: list(mark) for name, mark in sorted(self.outlets.items())},
        }
        text = json.dumps(data, ensure_ascii=True)  # ASCII: a tag with a lone surrogate still saves
        write_atomic(out / RENDER_STATE_FILE, text.encode("ascii"))


def site_fingerprint(site: SiteConfig, template_dirs: tuple[str | None, ...]) -> str:
    """Changes when anything that shapes every page does: the settings, the templates, this program."""
    digest = hashlib.sha256(repr((site, __version__)).encode("utf-8"))
    for directory in template_dirs:
        for template in sorted(Path(directory).glob("*")) if directory else ():
            stat = template.stat()
            digest.update(f"{template}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    return digest.hexdigest()


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False
