"""The digest email against a real SMTP server on loopback (aiosmtpd): STARTTLS, TLS, login,
both parts, headers, links; failures in words; the `email:` config; the daily send's policy."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import lxml.html
import pytest

from aggregator.config import Settings, load_settings
from aggregator.digest_text import day_digest
from aggregator.errors import ConfigError
from aggregator.mailer import (
    GAVE_UP,
    RETRYING,
    SENT,
    EmailState,
    MailError,
    after_failure,
    daily_message_id,
    deliver,
    email_day_due,
    next_email_at,
    retry_delay,
)
from tests.smtpserver import SMTPServer, TestCA, free_port
from tests.test_digest_text import DAY, day_entries
from tests.test_render import ListSource

NOW = datetime(2024, 5, 3, 7, 0, tzinfo=UTC)
PASSWORD_ENV = "AGGREGATOR_TEST_SMTP_PASSWORD"
LOGIN = f"  user: digest\n  password_env: {PASSWORD_ENV}\n"


def configure(tmp_path: Path, port: int, security: str = "none", extra: str = "") -> Settings:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "title: Crypto News Digest\nsite_url: https://news.example/\nfeeds: []\n"
        f"email:\n  host: 127.0.0.1\n  port: {port}\n  security: {security}\n"
        "  from: Crypto Digest <digest@news.example>\n  to: [alice@example.com, Bob <bob@example.org>]\n" + extra,
        encoding="utf-8",
    )
    return load_settings(path)


def send_day(settings: Settings) -> None:
    deliver(settings, day_digest(ListSource(day_entries()), settings.site, DAY), NOW)


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestCA:
    """A CA of our own that the SMTP client trusts (OpenSSL reads SSL_CERT_FILE when a context is made)."""
    authority = TestCA(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.ca_file))
    return authority


def test_the_digest_goes_out_over_starttls_with_a_login(
    tmp_path: Path, ca: TestCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "correct horse")
    with SMTPServer(security="starttls", ca=ca, logins={"digest": "correct horse"}) as server:
        settings = configure(tmp_path, server.port, "starttls", LOGIN)
        sent = deliver(settings, day_digest(ListSource(day_entries()), settings.site, DAY), NOW)
        (received,) = server.messages()
    assert sent.recipients == ("alice@example.com", "Bob <bob@example.org>") and sent.refused == ()
    assert received.login == "digest"
    assert received.mail_from == "digest@news.example"
    assert received.rcpt_tos == ("alice@example.com", "bob@example.org")
    message = received.message
    assert message["From"] == "Crypto Digest <digest@news.example>"
    assert message["To"] == "alice@example.com, Bob <bob@example.org>"
    assert message["Subject"] == "Crypto News Digest: 2024-05-02"
    assert parsedate_to_datetime(message["Date"]) == NOW
    assert re.fullmatch(r"<[^<>@\s]+@news\.example>", message["Message-ID"])
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    text_part, html_part = message.iter_parts()
    assert (text_part.get_content_type(), html_part.get_content_type()) == ("text/plain", "text/html")
    assert b"Content-Transfer-Encoding: quoted-printable" in received.raw

    text = text_part.get_content()
    assert "SEC sues Binance over unregistered securities" in text
    assert "    https://ledger.example/sec-binance?a=(1)&b=%3C2%3E" in text.splitlines()
    assert "https://news.example/digest/2024-05-02.html" in text
    assert not re.search(r"<[A-Za-z/!]|&[a-z]+;", text), "HTML in the text part"

    page = lxml.html.fromstring(html_part.get_content())
    hrefs = page.xpath("//a/@href")
    assert "https://cryptonews.example/news/1" in hrefs and "https://news.example/tags/regulation/sec.html" in hrefs
    assert all(href.startswith("https://") for href in hrefs)
    assert not page.xpath("//script | //link | //style")


@pytest.mark.parametrize("security", ["ssl", "none"])
def test_implicit_tls_and_a_plain_local_relay(tmp_path: Path, ca: TestCA, security: str) -> None:
    with SMTPServer(security=security, ca=ca) as server:
        send_day(configure(tmp_path, server.port, security))
        (received,) = server.messages()
    assert received.login is None
    assert received.message["Subject"] == "Crypto News Digest: 2024-05-02"


def test_a_refused_login_says_so(tmp_path: Path, ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with SMTPServer(security="starttls", ca=ca, logins={"digest": "correct horse"}) as server:
        settings = configure(tmp_path, server.port, "starttls", LOGIN)
        with pytest.raises(
            MailError, match=rf"the SMTP server 127\.0\.0\.1:{server.port} refused the login of 'digest': 535"
        ):
            send_day(settings)
        assert set(server.refused_logins) == {"digest"} and not server.messages()


def test_a_server_that_is_down_says_so(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(
        MailError, match=rf"could not connect to the SMTP server 127\.0\.0\.1:{port}: connection refused"
    ):
        send_day(configure(tmp_path, port, "starttls"))


def test_starttls_is_required_when_configured(tmp_path: Path) -> None:
    with SMTPServer(security="none") as server:
        with pytest.raises(MailError, match="does not offer STARTTLS"):
            send_day(configure(tmp_path, server.port, "starttls"))
        assert not server.messages()


def test_an_untrusted_certificate_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = TestCA(tmp_path)  # not trusted: no SSL_CERT_FILE
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with SMTPServer(security="starttls", ca=ca) as server:
        with pytest.raises(
            MailError, match=rf"TLS with the SMTP server 127\.0\.0\.1:{server.port} failed: .*certificate"
        ):
            send_day(configure(tmp_path, server.port, "starttls"))
        assert not server.messages()


def test_a_missing_password_variable_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    settings = configure(tmp_path, free_port(), "starttls", LOGIN)
    with pytest.raises(ConfigError) as raised:
        send_day(settings)
    assert raised.value.key == "email.password_env" and PASSWORD_ENV in str(raised.value)


MINIMAL = "email:\n  host: smtp.example.com\n  from: digest@example.com\n  to: me@example.com\n"


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        (MINIMAL + "  password: hunter2\n", "email.password", "does not belong in feeds.yaml"),
        (MINIMAL.replace("digest@example.com", "not an address"), "email.from", "is not an email address"),
        (MINIMAL.replace("me@example.com", "[]"), "email.to", "at least one address"),
        (MINIMAL.replace("me@example.com", "[ok@example.com, 'a@b.c, d@e.f']"), "email.to[1]", "not an email address"),
        (MINIMAL + "  subject: '{title} {when}'\n", "email.subject", "unknown placeholder {when}"),
        (MINIMAL + "  subject: '{title:d}'\n", "email.subject", "not a subject template"),
        (MINIMAL + "  security: tls\n", "email.security", "'starttls', 'ssl' or 'none'"),
        (MINIMAL + "  user: me\n", "email.password_env", "required when email.user is set"),
        (MINIMAL + "  password_env: SMTP_PASSWORD\n", "email.user", "required when email.password_env is set"),
        (MINIMAL + "  user: me\n  password_env: X\n  security: none\n", "email.security", "unencrypted"),
        (MINIMAL + "  password_env: not-a-name\n  user: me\n", "email.password_env", "not an environment variable"),
        (MINIMAL.replace("smtp.example.com", "smtp.example.com:587"), "email.host", "email.port"),
        (MINIMAL.replace("  host: smtp.example.com\n", ""), "email.host", "is required"),
        (MINIMAL + "  time: '7 am'\n", "email.time", "not a time of day"),
        (MINIMAL + "  retry_delay: soon\n", "email.retry_delay", "not a duration"),
        (MINIMAL + "  port: 0\n", "email.port", "greater than or equal to 1"),
        (
            MINIMAL + "  bcc: x@example.com\n",
            "email.bcc",
            "allowed keys: host, port, security, user, password_env, from",
        ),
    ],
)
def test_email_config_errors_name_the_key(tmp_path: Path, section: str, key: str, problem: str) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text("feeds: []\n" + section, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert raised.value.key == key, str(raised.value)
    assert problem in str(raised.value)


def test_email_config_defaults(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text('feeds: []\ndigest: {time: "06:30"}\n' + MINIMAL + "  security: ssl\n", encoding="utf-8")
    email = load_settings(path).email
    assert email is not None
    assert (email.port, email.time, email.to, email.subject) == (465, "06:30", ("me@example.com",), "{title}: {date}")
    assert load_settings(path).email == email  # the cached settings carry the section too


@pytest.mark.parametrize(
    ("now", "zone", "state", "due"),
    [
        (datetime(2024, 5, 3, 8, 0, tzinfo=UTC), "UTC", None, date(2024, 5, 2)),
        (datetime(2024, 5, 3, 6, 59, tzinfo=UTC), "UTC", None, date(2024, 5, 1)),
        (datetime(2024, 5, 3, 8, 0, tzinfo=UTC), "UTC", EmailState(date(2024, 5, 2), SENT), None),
        (datetime(2024, 5, 3, 8, 0, tzinfo=UTC), "UTC", EmailState(date(2024, 5, 2), RETRYING, 2), date(2024, 5, 2)),
        (datetime(2024, 5, 3, 8, 0, tzinfo=UTC), "UTC", EmailState(date(2024, 5, 2), GAVE_UP, 5), None),
        (datetime(2024, 5, 3, 8, 0, tzinfo=UTC), "UTC", EmailState(date(2024, 5, 1), SENT), date(2024, 5, 2)),
        (datetime(2024, 5, 3, 8, 0, tzinfo=UTC), "UTC", EmailState(date(2024, 5, 1), RETRYING, 1), date(2024, 5, 2)),
        # 05:30 UTC is 07:30 in Berlin: past 07:00 there.
        (datetime(2024, 5, 3, 5, 30, tzinfo=UTC), "Europe/Berlin", None, date(2024, 5, 2)),
    ],
)
def test_the_due_day_is_the_last_whole_day_not_yet_done(
    now: datetime, zone: str, state: EmailState | None, due: date | None
) -> None:
    assert email_day_due(now, zone, "07:00", state) == due


def test_failures_retry_with_backoff_then_give_up_until_the_next_day(tmp_path: Path) -> None:
    email = configure(tmp_path, 25, extra="  retries: 2\n  retry_delay: 5m\n").email
    assert email is not None
    day = date(2024, 5, 2)
    first = after_failure(None, day, "connection refused", email.retries)
    second = after_failure(first, day, "connection refused", email.retries)
    third = after_failure(second, day, "connection refused", email.retries)
    assert [(state.status, state.attempts) for state in (first, second, third)] == [
        (RETRYING, 1),
        (RETRYING, 2),
        (GAVE_UP, 3),
    ]
    assert after_failure(third, date(2024, 5, 3), "x", email.retries).attempts == 1  # a new day starts afresh
    assert [retry_delay(email, attempts) for attempts in (1, 2, 3, 20)] == [300, 600, 1200, 6 * 3600]


def test_state_survives_a_round_trip_and_garbage_is_ignored() -> None:
    state = EmailState(date(2024, 5, 2), RETRYING, 2, "connection refused")
    assert EmailState.from_json(state.to_json()) == state
    assert EmailState.from_json("{not json") is None
    assert EmailState.from_json(None) is None


def test_the_scheduled_message_id_is_stable_per_day(tmp_path: Path) -> None:
    settings = configure(tmp_path, 25)
    assert daily_message_id(settings, "2024-05-02") == daily_message_id(settings, "2024-05-02")
    assert daily_message_id(settings, "2024-05-02") != daily_message_id(settings, "2024-05-03")
    assert daily_message_id(settings, "2024-05-02").endswith("@news.example>")


def test_next_email_at() -> None:
    assert next_email_at(datetime(2024, 5, 3, 6, 0, tzinfo=UTC), "UTC", "07:00") == datetime(2024, 5, 3, 7, tzinfo=UTC)
    assert next_email_at(datetime(2024, 5, 3, 7, 0, tzinfo=UTC), "UTC", "07:00") == datetime(2024, 5, 4, 7, tzinfo=UTC)
