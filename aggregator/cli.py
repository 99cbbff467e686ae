"""The `aggregator` command line: parse options, call one function, print its result.

Errors become exit codes in one place (`main`): 2 for a usage or config error,
1 for an unexpected failure, 0 otherwise (failed feeds are reported, not fatal).
Heavy modules are imported inside the commands so that `--help` starts fast.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import click
from click.shell_completion import CompletionItem

from aggregator import __version__

if TYPE_CHECKING:
    from aggregator.config import Settings
    from aggregator.models import Entry, FeedStatus, SearchHit
    from aggregator.store import Store

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
TAG_HELP = "Only entries with this tag: a path like Blockchain/Binance, or its last part (any case)."
DATE = click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"])
EXPORT_FIELDS = ("id", "feed", "title", "link", "author", "published", "updated", "summary", "tags", "story")


class Context:
    """What the global options decided, handed to every command."""

    def __init__(self, config_path: Path | None, verbosity: int) -> None:
        self.config_path = config_path
        self.verbosity = verbosity
        self.log_format = "text"
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from aggregator.config import load_settings

            self._settings = load_settings(self.config_path)
        return self._settings

    def open_store(self, readonly: bool = False) -> Store:
        from aggregator.store import Store

        return Store(self.settings.database, readonly=readonly)


P = ParamSpec("P")
R = TypeVar("R")
_pass_context = click.make_pass_decorator(Context)


def pass_context(command: Callable[Concatenate[Context, P], R]) -> Callable[P, R]:
    """Hands a command the Context; declared with its type so that the command modules
    registered at the end of this file (an import cycle) type-check."""
    return _pass_context(command)


class Commands(click.Group):
    """The command group; a reader that goes away (`head`, a closed pager) ends any command quietly."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # Exit 0, as the reader has what it wanted (click would say 1); whatever is still
            # buffered for stdout goes nowhere, so the final flush cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(EXIT_OK) from None


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The feeds.yaml to use (default: $AGGREGATOR_CONFIG, then ./feeds.yaml).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-v: every poll, -vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no summary line.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or as one JSON object per line for log collectors.",
)
@click.version_option(__version__, prog_name="aggregator")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: int, quiet: bool, log_format: str) -> None:
    """A self-hosted crypto-news aggregator: polls the feeds of feeds.yaml into SQLite
    and renders a daily digest and merged feeds."""
    verbosity = -1 if quiet else verbose
    ctx.obj = Context(config_path, verbosity)
    ctx.obj.log_format = log_format
    _setup_logging(verbosity, log_format)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


#: Loggers of routine progress (each poll, each render): the daemon shows them from -v on.
PROGRESS_LOGGERS = ("aggregator.update", "aggregator.render", "aggregator.web")


def _setup_logging(verbosity: int, log_format: str = "text", daemon: bool = False) -> None:
    """Commands log warnings by default (-v: each poll); the daemon its start, daily digest,
    email, failures and stop (-v: each poll and render too); -vv: debug."""
    base = logging.INFO if daemon else logging.WARNING
    level = {-1: logging.ERROR if not daemon else logging.WARNING, 0: base}.get(
        verbosity, logging.DEBUG if verbosity > 1 else logging.INFO
    )
    for progress in PROGRESS_LOGGERS:
        logging.getLogger(progress).setLevel(logging.WARNING if daemon and verbosity == 0 else logging.NOTSET)
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level > logging.DEBUG else logging.DEBUG)


def complete_feed_names(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Shell completion of a feed name, from the config named on the command line (or the default)."""
    from aggregator.config import load_settings
    from aggregator.errors import AggregatorError

    try:
        settings = load_settings(ctx.find_root().params.get("config_path"))
    except AggregatorError:
        return []  # a broken config is reported when the command runs, not while typing
    return [CompletionItem(feed.name, help=feed.url) for feed in settings.feeds if feed.name.startswith(incomplete)]


@cli.command()
@click.option(
    "--feed",
    "names",
    multiple=True,
    metavar="NAME",
    shell_complete=complete_feed_names,
    help="Poll only this feed (repeatable).",
)
@pass_context
def update(context: Context, names: tuple[str, ...]) -> None:
    """Poll every feed (or the named ones) now, ignoring the schedule, and store new entries."""
    from aggregator.workers import start_fork_server

    settings = context.settings
    known = {feed.name for feed in settings.feeds}
    for name in names:
        if name not in known:
            raise click.BadParameter(f"no feed named {name!r} in {settings.path}", param_hint="--feed")
    count = len(names) or len(settings.feeds)
    if not settings.database.exists():  # a first update parses every feed: have the workers ready early
        start_fork_server(count)  # before the heavy imports below, so that both go on at once

    from aggregator.progress import update_progress
    from aggregator.update import update_feeds

    display = update_progress(count, sys.stderr, context.verbosity, context.log_format)
    with context.open_store() as store, display as progress:
        summary = update_feeds(
            settings, store, names, on_result=progress.feed_done, on_grouping=progress.grouping_stories
        )
    if context.verbosity >= 0:
        click.echo(summary.line())
    if any(result.internal_error for result in summary.results):
        raise SystemExit(EXIT_FAILURE)


@cli.command()
@click.option("--full", is_flag=True, help="Write every page and feed again, not only what changed.")
@pass_context
def render(context: Context, full: bool) -> None:
    """Write the digest pages and every output feed under output_dir (only what changed
    since the last render, unless --full)."""
    from aggregator.opml import opml_document
    from aggregator.render import render_all

    settings = context.settings
    with context.open_store() as store:
        opml = opml_document(settings.feeds, settings.title, store.site_links())
        report = render_all(store, settings.site, datetime.now(UTC), full=full, opml=opml)
    if context.verbosity >= 0:
        click.echo(f"wrote {report.files_written} files to {settings.output_dir}")


@cli.command()
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_context
def feeds(context: Context, output_format: str) -> None:
    """List every feed with its status, last error, entry count and poll times."""
    statuses = _feed_statuses(context)
    if output_format == "json":
        click.echo(json.dumps([_status_record(status) for status in statuses], indent=2))
        return
    rows = [
        (
            status.name,
            status.status,
            str(status.entries),
            _short_time(status.last_fetched),
            _short_time(status.next_fetch),
            status.next_reason or "",
            status.last_error or "",
        )
        for status in statuses
    ]
    click.echo(_table(("name", "status", "entries", "last fetched", "next fetch", "why", "last error"), rows))


def _feed_statuses(context: Context) -> list[FeedStatus]:
    """The stored state of each configured feed; feeds never polled show as `new`."""
    from aggregator.models import FeedStatus

    settings = context.settings
    stored: dict[str, FeedStatus] = {}
    if settings.database.exists():
        with context.open_store(readonly=True) as store:
            stored = {status.name: status for status in store.feed_statuses(active_only=False)}
    return [
        stored.get(feed.name)
        or FeedStatus(
            name=feed.name,
            url=feed.url,
            title=feed.title,
            status="new",
            last_error=None,
            entries=0,
            last_fetched=None,
            next_fetch=None,
        )
        for feed in settings.feeds
    ]


def _status_record(status: FeedStatus) -> dict[str, Any]:
    return {
        "name": status.name,
        "url": status.url,
        "title": status.title,
        "status": status.status,
        "last_error": status.last_error,
        "error_count": status.error_count,
        "entries": status.entries,
        "last_fetched": _iso(status.last_fetched),
        "next_fetch": _iso(status.next_fetch),
        "next_reason": status.next_reason,
    }


@cli.command()
@click.argument("query")
@click.option("--tag", metavar="TAG", help=TAG_HELP)
@click.option("--since", type=DATE, help="Only entries published since (YYYY-MM-DD, UTC).")
@click.option("--feed", metavar="NAME", shell_complete=complete_feed_names, help="Only entries of this feed.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000), help="At most this many.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_context
def search(
    context: Context,
    query: str,
    tag: str | None,
    since: datetime | None,
    feed: str | None,
    limit: int,
    output_format: str,
) -> None:
    """Full-text search of titles and summaries, best match first.

    Plain words must all appear ("Crypto.com", "Binance's" are words); FTS5 syntax
    also works: "a phrase", prefix*, OR, NOT, NEAR(...), title:word.
    """
    from aggregator.search_page import FilterError, find

    with context.open_store(readonly=True) as store:
        try:
            results = find(store, query, tag=tag, feed=feed, since=_utc(since), limit=limit)
        except FilterError as error:
            raise click.BadParameter(str(error), param_hint=f"--{error.option}") from None
    if output_format == "json":
        click.echo(json.dumps([_hit_record(hit) for hit in results.hits], indent=2, ensure_ascii=False))
    elif results.hits:
        click.echo(_hits_table(results.hits, bold=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    else:
        click.echo(f"no entries match {query!r}", err=True)


def _hit_record(hit: SearchHit) -> dict[str, Any]:
    from aggregator.search_page import marked_parts

    entry = hit.entry
    return {
        "id": entry.uid,
        "feed": entry.feed,
        "title": entry.title,
        "link": entry.link,
        "published": _iso(entry.published),
        "tags": list(entry.tags),
        "story": entry.story,
        "snippet": _marked(marked_parts(hit.snippet), bold=False),
        "rank": hit.rank,
    }


def _hits_table(hits: Sequence[SearchHit], bold: bool) -> str:
    """Each hit on one line (published, feed, title), its snippet indented on the next."""
    from aggregator.search_page import hit_text

    shown = [hit_text(hit) for hit in hits]
    rows = [(_short_time(hit.entry.published), hit.entry.feed) for hit in hits]
    width = max(len(feed) for _time, feed in rows)
    lines = [f"{'published':16}  {'feed':{width}}  title"]
    for (published, feed), text in zip(rows, shown, strict=True):
        lines.append(f"{published}  {feed:{width}}  {_marked(text.title, bold)}")
        if text.snippet:
            lines.append(f"    {_marked(text.snippet, bold)}")
    return "\n".join(lines)


def _marked(parts: Sequence[tuple[str, bool]], bold: bool) -> str:
    """Matches in bold on a terminal, else between « and »."""
    return "".join((click.style(text, bold=True) if bold else f"«{text}»") if match else text for text, match in parts)


@cli.command()
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_context
def tags(context: Context, output_format: str) -> None:
    """The tag tree with the number of entries under each tag (children by count, then name)."""
    from aggregator.search_page import tag_tree

    with context.open_store(readonly=True) as store:
        tree = tag_tree(store.tags_in_use())
    if output_format == "json":
        click.echo(json.dumps([{"tag": node.path, "count": node.count} for node in tree], indent=2))
        return
    if not tree:
        click.echo("no tagged entries yet", err=True)
        return
    labels = ["  " * node.depth + node.name for node in tree]
    width = max(len(label) for label in labels)
    lines = [f"{'tag':{width}}  entries"]
    lines += [f"{label:{width}}  {node.count:>7}" for label, node in zip(labels, tree, strict=True)]
    click.echo("\n".join(lines))


@cli.command()
@click.option("--format", "output_format", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--since", type=DATE, help="Only entries published since (YYYY-MM-DD, UTC).")
@click.option("--tag", metavar="TAG", help=TAG_HELP)
@pass_context
def export(context: Context, output_format: str, since: datetime | None, tag: str | None) -> None:
    """Write one record per entry (id, feed, title, link, author, published, updated,
    summary, tags, story) to stdout, streaming."""
    from aggregator.search_page import FilterError, resolve_tag

    with context.open_store(readonly=True) as store:
        if tag is not None:
            try:
                tag = resolve_tag(tag, (path for path, _count in store.tags_in_use()))
            except FilterError as error:
                raise click.BadParameter(str(error), param_hint="--tag") from None
        records = (_export_record(entry) for entry in store.iter_entries(_utc(since), tag=tag))
        _utf8_stdout()
        if output_format == "jsonl":
            for record in records:
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            _write_csv(records)
        sys.stdout.flush()


def _export_record(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.uid,
        "feed": entry.feed,
        "title": entry.title,
        "link": entry.link,
        "author": entry.author,
        "published": _iso(entry.published),
        "updated": _iso(entry.updated),
        "summary": entry.summary,
        "tags": list(entry.tags),
        "story": entry.story,
    }


def _utf8_stdout() -> None:
    """Exports are UTF-8 (without a BOM) whatever the locale: a C or Latin-1 locale would
    otherwise stop at the first 'ü' or '—'. Line ends are written as given."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8", newline="")


def _write_csv(records: Iterator[dict[str, Any]]) -> None:
    """RFC 4180 quoting (fields with commas, quotes or line breaks are quoted), one header row,
    LF between records; dates are already ISO 8601 UTC, tags joined with ';'."""
    import csv

    writer = csv.DictWriter(sys.stdout, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({**record, "tags": ";".join(record["tags"])})


@cli.command()
@click.option("--once", is_flag=True, help="One full cycle (poll every feed, render, digest), then exit.")
@click.option("--no-serve", is_flag=True, help="Do not serve output_dir over HTTP.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve output_dir on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to serve on.")
@pass_context
def run(context: Context, once: bool, no_serve: bool, host: str, port: int) -> None:
    """The daemon: poll each feed on its interval, render after changes, write the daily
    digest and serve output_dir, until Ctrl-C or SIGTERM (SIGHUP re-reads the config)."""
    from aggregator.scheduler import Daemon

    _setup_logging(context.verbosity, context.log_format, daemon=True)
    settings = context.settings
    daemon = Daemon(settings, serve_at=None if no_serve or once else (host, port))
    summary = daemon.run(once=once)
    if summary is not None and context.verbosity >= 0:
        click.echo(summary.line())


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@pass_context
def serve(context: Context, host: str, port: int) -> None:
    """Serve output_dir over HTTP (ETag/304, gzip) and a search page at /search;
    read-only, works beside a running daemon."""
    from aggregator.web import SEARCH_PATH, OutputServer

    _setup_logging(context.verbosity, context.log_format, daemon=True)
    settings = context.settings
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    server = OutputServer(settings.output_dir, host, port, database=settings.database, site=settings.site)
    search_url = server.url.rstrip("/") + SEARCH_PATH
    click.echo(f"serving {settings.output_dir} on {server.url}, search at {search_url} (Ctrl-C to stop)")
    sys.stdout.flush()  # a supervisor or test reading the pipe learns the address now, not at exit
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


@cli.command()
@pass_context
def reload(context: Context) -> None:
    """Ask the running daemon to re-read feeds.yaml (the same as sending it SIGHUP)."""
    from aggregator.scheduler import send_reload

    settings = context.settings  # a broken file is reported here, before the daemon sees it
    pid = send_reload(settings)
    if context.verbosity >= 0:
        click.echo(f"asked the daemon (pid {pid}) to reload {settings.path}")


@cli.command()
@pass_context
def check(context: Context) -> None:
    """Validate the config and print the resolved settings."""
    settings = context.settings
    lines = [
        f"config: {settings.path} (ok)",
        f"title: {settings.title}",
        f"site_url: {settings.site_url}",
        f"database: {settings.database}",
        f"output_dir: {settings.output_dir}",
        f"templates_dir: {settings.templates_dir or '(built-in)'}",
        f"timezone: {settings.timezone}",
        f"digest: at {settings.digest_time}, at most {settings.digest_max_stories} stories",
        f"fetch: {settings.concurrency} at once, {settings.per_host} per host",
        f"tags: {len(settings.tag_rules)} extra taxonomy rules",
        f"feeds: {len(settings.feeds)}",
    ]
    if settings.email is not None:
        email = settings.email
        login = f", login {email.user} (password from ${email.password_env})" if email.user else ""
        lines.insert(
            -1,
            f"email: to {', '.join(email.to)} at {email.time} via {email.host}:{email.port} ({email.security}{login})",
        )
    for feed in settings.feeds:
        lines.append(
            f"  {feed.name}: {feed.url} every {_seconds(feed.interval_seconds)}, timeout "
            f"{_seconds(feed.timeout_seconds)}, max {_size(feed.max_bytes)}"
            + (f", tags {', '.join(feed.tags)}" if feed.tags else "")
        )
    click.echo("\n".join(lines))


def _seconds(value: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


def _size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:g}{unit}"
    return f"{size}B"


def _utc(moment: datetime | None) -> datetime | None:
    """A date given on the command line (naive) as UTC."""
    return moment.replace(tzinfo=UTC) if moment else None


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _short_time(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else "-"


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)


def main() -> None:
    """Entry point: run the click group and turn our errors into exit codes."""
    from aggregator.errors import AggregatorError, ConfigError, SearchQueryError

    try:
        # One name however it was started (`python -m aggregator` too): usage lines, _AGGREGATOR_COMPLETE.
        code = cli.main(prog_name="aggregator", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILURE)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_USAGE if error.exit_code == EXIT_USAGE else error.exit_code)
    except (ConfigError, SearchQueryError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_USAGE)
    except AggregatorError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_FAILURE)
    except OSError as error:
        # Our own house: an output folder that cannot be written, a full disk.
        where = f" {error.filename}" if error.filename else ""
        click.echo(f"error: cannot write{where}: {error.strerror or error}", err=True)
        sys.exit(EXIT_FAILURE)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


from aggregator.cli_digest import digest  # noqa: E402

cli.add_command(digest)

from aggregator.cli_feeds import add, opml, remove  # noqa: E402

cli.add_command(opml)
cli.add_command(add)
cli.add_command(remove)


if __name__ == "__main__":
    main()
