"""The commands that change the feed list: `opml import`, `opml export`, `add` and `remove`.

A thin click layer over `opml` and `discover`: parse the arguments, call one function, print
what it did. feeds.yaml keeps its comments, order and layout through every change.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from aggregator.cli import Context, pass_context

if TYPE_CHECKING:
    from aggregator.discover import Chooser, FoundFeed
    from aggregator.models import FeedConfig
    from aggregator.opml import ImportPlan


@click.group()
def opml() -> None:
    """Import the feeds of another reader's OPML file, or export ours as OPML 2.0."""


@opml.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Only show what would be added and skipped; change nothing.")
@pass_context
def opml_import(context: Context, file: IO[bytes], dry_run: bool) -> None:
    """Add the feeds of an OPML FILE to feeds.yaml ('-' reads stdin). Category outlines
    become tags; a feed already there (same URL) is skipped; comments and order are kept."""
    from aggregator.opml import MAX_OPML_BYTES, import_opml

    settings = context.settings
    plan = import_opml(settings.path, file.name, file.read(MAX_OPML_BYTES + 1), dry_run=dry_run)
    if dry_run or context.verbosity >= 0:
        click.echo(_plan_report(plan, str(settings.path), dry_run))


def _plan_report(plan: ImportPlan, config: str, dry_run: bool) -> str:
    verb, skip_verb = ("would add", "would skip") if dry_run else ("added", "skipped")
    lines = [f"{verb} {len(plan.added)} feeds to {config}" + (":" if plan.added else "")]
    width = max((len(feed.name) for feed in plan.added), default=0)
    lines += [f"  {feed.name:{width}}  {feed.url}{_tags(feed)}" for feed in plan.added]
    if plan.skipped:
        lines.append(f"{skip_verb} {len(plan.skipped)}:")
        lines += [f"  {skipped.url}: {skipped.reason}" for skipped in plan.skipped]
    return "\n".join(lines)


def _tags(feed: FeedConfig) -> str:
    return f"  [{', '.join(feed.tags)}]" if feed.tags else ""


@opml.command("export")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file (replaced atomically) instead of stdout.",
)
@pass_context
def opml_export(context: Context, out: Path | None) -> None:
    """Write the feeds as OPML 2.0, for other readers. Miniflux, FreshRSS, newsboat and
    others import it; a feed with tags sits in a category named for its first tag."""
    from aggregator.opml import opml_document

    settings = context.settings
    site_links: dict[str, str] = {}
    if settings.database.exists():
        with context.open_store(readonly=True) as store:
            site_links = store.site_links()
    document = opml_document(settings.feeds, settings.title, site_links)
    if out is None:
        sys.stdout.buffer.write(document)
        return
    with click.open_file(str(out), "wb", atomic=True) as handle:
        handle.write(document)
    if context.verbosity >= 0:
        click.echo(f"wrote {len(settings.feeds)} feeds to {out}", err=True)


@click.command()
@click.argument("url")
@click.option("--name", help="The feed's name in feeds.yaml (default: a slug of its title).")
@click.option(
    "--tag", "tags", multiple=True, metavar="TAG", help="A tag added to every entry of the feed (repeatable)."
)
@click.option(
    "--pick",
    type=click.IntRange(min=1),
    metavar="N",
    help="When the site offers several feeds, take the Nth of the list (instead of being asked).",
)
@pass_context
def add(context: Context, url: str, name: str | None, tags: tuple[str, ...], pick: int | None) -> None:
    """Add a feed, given its URL or its site's. A page is searched for the feeds it
    advertises (then /feed, /rss, ...); with several, you pick one. The feed is fetched
    and read before it is appended to feeds.yaml."""
    from aggregator.discover import subscribe

    done = subscribe(context.config_path, url, _chooser(url, pick), name=name, tags=tags)
    if context.verbosity >= 0:
        found = done.found
        title = f"{found.title!r}, " if found.title else ""
        click.echo(f"added {done.feed.name}: {done.feed.url} ({title}{found.entries} entries){_tags(done.feed)}")
        if found.warning:
            click.echo(f"note: the feed is malformed but readable: {found.warning}", err=True)


def _chooser(url: str, pick: int | None) -> Chooser:
    """Pick with --pick, else ask on a terminal, else stop with the list."""

    def choose(feeds: Sequence[FoundFeed]) -> FoundFeed:
        listing = "\n".join(_numbered(feeds))
        if pick is not None:
            if pick > len(feeds):
                raise click.BadParameter(f"there are only {len(feeds)} feeds:\n{listing}", param_hint="--pick")
            return feeds[pick - 1]
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise click.UsageError(f"{url} offers {len(feeds)} feeds; choose one with --pick N:\n{listing}")
        click.echo(f"{url} offers {len(feeds)} feeds:\n{listing}")
        return feeds[click.prompt("Add which one", type=click.IntRange(1, len(feeds))) - 1]

    return choose


def _numbered(feeds: Sequence[FoundFeed]) -> list[str]:
    lines = []
    for number, found in enumerate(feeds, start=1):
        known = f", already added as {found.subscribed_as}" if found.subscribed_as else ""
        lines.append(f"  {number}) {found.title or '(untitled)'}: {found.url} ({found.entries} entries{known})")
    return lines


@click.command()
@click.argument("name")
@click.option("--purge", is_flag=True, help="Also delete its entries from the database (kept otherwise).")
@pass_context
def remove(context: Context, name: str, purge: bool) -> None:
    """Remove the feed NAME from feeds.yaml. The rest of the file stays as it is; the
    feed's entries stay in the database, search and exports unless --purge."""
    from aggregator.discover import unsubscribe

    done = unsubscribe(context.config_path, name, purge=purge)
    if context.verbosity < 0:
        return
    where = f"removed {name} from {context.settings.path}" if done.removed else f"{name} was not in feeds.yaml"
    if done.entries_deleted is None:
        click.echo(f"{where}; its entries stay in the database (--purge deletes them)")
    else:
        click.echo(
            f"{where}; deleted its {done.entries_deleted} entries "
            "(`aggregator render --full` rewrites the pages without them)"
        )
