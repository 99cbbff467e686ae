"""The daily digest as an email, sent over SMTP with the standard library (email, smtplib).

`digest_email` builds a multipart/alternative message: the plain-text digest and a
self-contained HTML one (inline styles, absolute links), both from `digest_text`.
`send` delivers it with STARTTLS, implicit TLS or neither, logging in when a user is
configured; the password is read from the environment variable the config names, at
send time, and never stored. Every failure becomes a `MailError` that says what went
wrong in words ("connection refused", "refused the login"). `send` blocks: the daemon
runs it off its event loop.

Also the pure policy of the daemon's daily email: which day is due, how long to wait
before the next try, and the state kept in the database so that a restart neither
sends a day twice nor forgets a retry. Knows nothing of SQL or of the scheduler.
"""

from __future__ import annotations

import hashlib
import json
import os
import smtplib
import socket
import ssl
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid, parseaddr
from zoneinfo import ZoneInfo

from aggregator import __version__
from aggregator.config import EmailConfig, Settings
from aggregator.digest_text import DayDigest, email_html, email_subject, plain_text
from aggregator.errors import AggregatorError, ConfigError

#: Seconds smtplib waits on any one step (connect, TLS, each command) before giving up.
SMTP_TIMEOUT_SECONDS = 30.0
#: The longest wait between two tries of one day's email.
MAX_RETRY_DELAY_SECONDS = 6 * 3600.0

SENT = "sent"
RETRYING = "retrying"
GAVE_UP = "failed"
EMPTY = "empty"


class MailError(AggregatorError):
    """The digest email could not be sent; the message says why, in words."""

    code = "mail"


@dataclass(frozen=True)
class SentDigest:
    """What one send did: the day, the addresses it went to and those the server refused."""

    day: str
    stories: int
    recipients: tuple[str, ...]
    refused: tuple[str, ...]


def digest_email(
    settings: Settings, digest: DayDigest, now: datetime, *, message_id: str | None = None
) -> EmailMessage:
    """The day's digest as a multipart/alternative email (plain text first, then HTML)."""
    email = require_email(settings)
    templates = settings.site.templates_dir
    subject = email_subject(email.subject, digest)
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = email.sender
    message["To"] = ", ".join(email.to)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id or make_msgid("digest", domain=_domain(email.sender))
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    message["User-Agent"] = f"aggregator/{__version__}"
    # Quoted-printable: safe through any SMTP server, 8BITMIME or not, and readable in the raw.
    message.set_content(plain_text(digest, templates), cte="quoted-printable")
    message.add_alternative(email_html(digest, subject, templates), subtype="html", cte="quoted-printable")
    return message


def daily_message_id(settings: Settings, day: str) -> str:
    """The same Message-ID for the same day's scheduled email, so a mail client drops a resend."""
    email = require_email(settings)
    token = hashlib.sha256("\n".join((settings.site_url, day, *email.to)).encode()).hexdigest()[:16]
    return f"<digest.{day}.{token}@{_domain(email.sender)}>"


def deliver(settings: Settings, digest: DayDigest, now: datetime, *, message_id: str | None = None) -> SentDigest:
    """Build the day's email and send it now; raises MailError (or ConfigError: no password)."""
    email = require_email(settings)
    message = digest_email(settings, digest, now, message_id=message_id)
    refused = send(email, message, password_for(settings))
    return SentDigest(
        day=digest.day,
        stories=digest.story_count,
        recipients=tuple(address for address in email.to if _bare(address) not in refused),
        refused=refused,
    )


def require_email(settings: Settings) -> EmailConfig:
    """The email: section, or a ConfigError saying it is missing."""
    if settings.email is None:
        raise ConfigError(
            str(settings.path), "email", "is not set", "add an email: section (SMTP host, from, to) to send the digest"
        )
    return settings.email


def password_for(settings: Settings) -> str | None:
    """The SMTP password from the environment variable named by email.password_env, if any."""
    email = require_email(settings)
    if not email.password_env:
        return None
    password = os.environ.get(email.password_env)
    if not password:
        raise ConfigError(
            str(settings.path),
            "email.password_env",
            f"the environment variable {email.password_env} is not set",
            "export it with the SMTP password before starting aggregator",
        )
    return password


def send(email: EmailConfig, message: EmailMessage, password: str | None) -> tuple[str, ...]:
    """Deliver `message` to email.to; returns the addresses the server refused (when it took the rest)."""
    sender = _bare(email.sender)
    recipients = [_bare(address) for address in email.to]
    try:
        with _connect(email) as client:
            if email.security == "starttls":
                _start_tls(client, email)
            if email.user:
                client.login(email.user, password or "")
            refused = client.send_message(message, from_addr=sender, to_addrs=recipients)
    except (OSError, smtplib.SMTPException) as error:
        raise mail_error(error, email) from None
    return tuple(sorted(refused))


def mail_error(error: Exception, email: EmailConfig) -> MailError:
    """An SMTP, TLS or socket failure as a sentence an operator understands."""
    where = f"{email.host}:{email.port}"
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return MailError(f"the SMTP server {where} refused the login of {email.user!r}: {_reply(error)}")
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(f"{address} ({_reply_of(*reply)})" for address, reply in error.recipients.items())
        return MailError(f"the SMTP server {where} refused every recipient: {refused}")
    if isinstance(error, smtplib.SMTPSenderRefused):
        return MailError(f"the SMTP server {where} refused the sender {email.sender!r}: {_reply(error)}")
    if isinstance(error, smtplib.SMTPResponseException):
        return MailError(f"the SMTP server {where} answered {_reply(error)}")
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return MailError(f"the SMTP server {where} closed the connection unexpectedly")
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return MailError(f"the SMTP server {where}: {error}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return MailError(f"TLS with the SMTP server {where} failed: {error.verify_message or error}")
    if isinstance(error, ssl.SSLError):
        return MailError(f"TLS with the SMTP server {where} failed: {error.reason or error}")
    if isinstance(error, ConnectionRefusedError):
        return MailError(f"could not connect to the SMTP server {where}: connection refused")
    if isinstance(error, socket.gaierror):
        return MailError(f"could not resolve the SMTP host {email.host!r}")
    if isinstance(error, TimeoutError):
        return MailError(f"the SMTP server {where} did not answer within {SMTP_TIMEOUT_SECONDS:g} s")
    if isinstance(error, OSError) and error.strerror:
        return MailError(f"could not talk to the SMTP server {where}: {error.strerror}")
    return MailError(f"could not send through the SMTP server {where}: {error}")


# -- the daemon's daily email: which day, when to try again, what is remembered --------------


@dataclass(frozen=True)
class EmailState:
    """The last day the daemon emailed (or tried to), kept in the database across restarts."""

    day: date
    status: str
    attempts: int = 0
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {"day": self.day.isoformat(), "status": self.status, "attempts": self.attempts, "error": self.error}
        )

    @classmethod
    def from_json(cls, text: str | None) -> EmailState | None:
        """The stored state, or None when there is none (or it cannot be read: start afresh)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(date.fromisoformat(data["day"]), str(data["status"]), int(data["attempts"]), data.get("error"))
        except (ValueError, KeyError, TypeError):
            return None


def email_day_due(now: datetime, timezone: str, email_time: str, state: EmailState | None) -> date | None:
    """The day whose digest should be emailed now, if any.

    The email sent at `email_time` on one day carries the whole previous day, so every
    story is mailed once. The day is due once that moment has passed, unless it was
    sent, found empty or given up on already; an unfinished retry is due again.
    """
    zone = ZoneInfo(timezone)
    local_now = now.astimezone(zone)
    moment = datetime.combine(local_now.date(), dt_time.fromisoformat(email_time), tzinfo=zone)
    day = local_now.date() - timedelta(days=1 if local_now >= moment else 2)
    if state is None or state.day < day:
        return day
    if state.day == day and state.status == RETRYING:
        return day
    return None


def next_email_at(now: datetime, timezone: str, email_time: str) -> datetime:
    """The next moment (in the configured zone) at which the daily email goes out."""
    zone = ZoneInfo(timezone)
    local_now = now.astimezone(zone)
    moment = datetime.combine(local_now.date(), dt_time.fromisoformat(email_time), tzinfo=zone)
    return moment if moment > local_now else datetime.combine(moment.date() + timedelta(days=1), moment.timetz())


def after_failure(state: EmailState | None, day: date, error: str, retries: int) -> EmailState:
    """The state after a failed try: retrying while tries are left, else given up until the next day."""
    attempts = (state.attempts if state is not None and state.day == day else 0) + 1
    return EmailState(day, RETRYING if attempts <= retries else GAVE_UP, attempts, error)


def retry_delay(email: EmailConfig, attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed try: retry_delay, then doubling, capped."""
    return float(min(email.retry_delay_seconds * 2 ** max(attempts - 1, 0), MAX_RETRY_DELAY_SECONDS))


# -- private helpers ------------------------------------------------------------------------


def _connect(email: EmailConfig) -> smtplib.SMTP:
    if email.security == "ssl":
        return smtplib.SMTP_SSL(
            email.host, email.port, timeout=SMTP_TIMEOUT_SECONDS, context=ssl.create_default_context()
        )
    return smtplib.SMTP(email.host, email.port, timeout=SMTP_TIMEOUT_SECONDS)


def _start_tls(client: smtplib.SMTP, email: EmailConfig) -> None:
    client.ehlo()
    if not client.has_extn("starttls"):
        raise smtplib.SMTPNotSupportedError(
            "it does not offer STARTTLS (set email.security to ssl, or to none for a local relay)"
        )
    client.starttls(context=ssl.create_default_context())
    client.ehlo()


def _bare(address: str) -> str:
    return parseaddr(address)[1]


def _domain(address: str) -> str:
    addresses = getaddresses([address])
    return addresses[0][1].rpartition("@")[2] if addresses else "localhost"


def _reply(error: smtplib.SMTPResponseException) -> str:
    return _reply_of(error.smtp_code, error.smtp_error)


def _reply_of(code: int, text: bytes | str) -> str:
    words = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{code} {' '.join(words.split())}"
