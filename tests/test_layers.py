"""The package's layering: each module imports only the modules below it, and each
third-party library lives in the one module whose job it is (see DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aggregator"

ALLOWED_OWN = {
    "models": set(),
    "errors": set(),
    "config": {"models", "config_model"},
    "config_model": {"models", "config"},
    "fetch": {"models", "fetch_pool", "fetch_decode"},
    "fetch_decode": set(),
    "fetch_pool": set(),
    "parse": {"models", "sanitize", "feedxml"},
    "sanitize": {"models"},
    "feedxml": {"models"},
    "tagging": {"models", "tagging_moves"},
    "tagging_moves": set(),
    "store": {"models", "store_queries", "store_schema"},
    "store_queries": {"models", "store_fts"},
    "store_fts": set(),
    "store_schema": set(),
    "store_writer": {"models", "store"},
    "stories": {"models", "store"},
    "schedule": {"models"},
    "update": {
        "models",
        "config",
        "fetch",
        "parse",
        "tagging",
        "store",
        "stories",
        "schedule",
        "workers",
        "store_writer",
    },
    "workers": {"models", "parse", "tagging", "store", "stories"},
    "worker_preload": {"workers", "stories"},
    "render": {
        "models",
        "store",
        "store_queries",
        "digest",
        "syndication",
        "site_views",
        "render_files",
        "render_share",
    },
    "render_files": {"models"},
    "render_share": set(),
    "digest": {"models"},
    "syndication": {"models", "digest"},
    "site_views": {"models", "digest", "store_queries"},
    "scheduler": {"models", "config", "store", "update", "render", "web", "digest_text", "mailer", "opml"},
    "digest_text": {"models", "digest", "render"},
    "mailer": {"config", "digest_text"},
    "cli_digest": {"cli", "digest_text", "mailer", "render"},
    "web": {"models", "config", "store", "search_page"},
    "search_page": {"models", "store", "render", "store_fts"},
    "opml": {"models", "config", "feeds_file"},
    "feeds_file": {"models", "config", "parse"},
    "discover": {"models", "config", "feeds_file", "fetch", "parse", "store"},
    "cli_feeds": {"cli", "discover", "models", "opml"},
    "progress": {"update"},
}
LIBRARY_OWNER = {
    "httpx": {"fetch", "fetch_pool"},
    "httpcore": {"fetch_pool"},
    "feedparser": {"parse"},
    "nh3": {"sanitize"},
    "lxml": {"feedxml", "opml"},
    "sqlite_utils": {"store", "store_schema"},
    "sqlite3": {"store", "store_queries"},
    "jinja2": {"render"},
    "apscheduler": {"scheduler"},
    "click": {"cli", "cli_digest", "cli_feeds"},
    "smtplib": {"mailer"},
    "yaml": {"config", "tagging"},
    "pydantic": {"config_model"},
    "rich": {"progress"},
    "ruamel": {"feeds_file"},
    "slugify": {"feeds_file"},
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "aggregator":
                names.update(f"aggregator.{alias.name}" for alias in node.names)
    return names


MODULES = sorted(path for path in PACKAGE.glob("*.py") if path.stem not in ("__init__", "__main__"))


@pytest.mark.parametrize("path", MODULES, ids=[path.stem for path in MODULES])
def test_imports_go_downward_only(path: Path) -> None:
    module = path.stem
    for name in imported_modules(path):
        parts = name.split(".")
        if parts[0] == "aggregator" and len(parts) > 1 and module != "cli":
            own = parts[1]
            if own in ("errors", "__version__", "USER_AGENT", "PROJECT_URL"):
                continue
            assert own in ALLOWED_OWN.get(module, set()), f"{module} may not import aggregator.{own}"
        owners = LIBRARY_OWNER.get(parts[0])
        if owners is not None:
            assert module in owners, f"{module} imports {parts[0]}, which belongs to {sorted(owners)}"
