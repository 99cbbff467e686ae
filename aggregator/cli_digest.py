"""`aggregator digest`: one day's digest as a page, Markdown or plain text, or sent by email now."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from aggregator.cli import Context, pass_context

#: The same as `digest_text.FORMATS`, spelled out so that `--help` need not import it.
FORMATS = ("html", "md", "text")


@click.command()
@click.option(
    "--date",
    "day",
    type=click.DateTime(["%Y-%m-%d"]),
    help="The day, YYYY-MM-DD, in the configured timezone (default: today).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="html",
    show_default=True,
    help="html: the day's page; md: Markdown for chats and notes; text: plain text.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False, writable=True),
    help="Write to this file (replaced atomically) instead of stdout.",
)
@click.option("--email", "send_email", is_flag=True, help="Send the day's digest by email now (the email: section).")
@pass_context
def digest(context: Context, day: datetime | None, output_format: str, out: Path | None, send_email: bool) -> None:
    """One day's digest as a page, Markdown or plain text (stdout or --out FILE), or sent by
    email now (--email; with --out it is also written). Top stories first, then topics."""
    from zoneinfo import ZoneInfo

    from aggregator.digest_text import day_digest, day_document
    from aggregator.mailer import SentDigest, deliver, require_email
    from aggregator.render import write_atomic

    settings = context.settings
    if send_email:
        require_email(settings)  # before anything else: a missing section is a usage error
    now = datetime.now(ZoneInfo(settings.timezone))
    chosen = day.date() if day is not None else now.date()
    sent: SentDigest | None = None
    document: bytes | None = None
    with context.open_store(readonly=True) as store:
        if send_email:
            sent = deliver(settings, day_digest(store, settings.site, chosen), now)
        if out is not None or not send_email:
            # UTF-8 whatever the locale, as the page declares and chats expect.
            document = day_document(store, settings.site, chosen, output_format).encode("utf-8")
    if sent is not None:
        if sent.refused:
            click.echo(f"warning: the SMTP server refused {', '.join(sent.refused)}", err=True)
        if context.verbosity >= 0:
            click.echo(f"sent the digest of {sent.day} ({sent.stories} stories) to {', '.join(sent.recipients)}")
    if document is not None and out is not None:
        write_atomic(out, document)
    elif document is not None:
        click.echo(document, nl=False)
