"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps every message it accepts.

Optionally with STARTTLS or implicit TLS (a certificate from a throwaway CA made by
trustme; point SSL_CERT_FILE at `TestCA.ca_file` so the client trusts it) and with a
login. Waiting for a message polls with a deadline, never sleeps blindly.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Received:
    """One accepted message: the envelope, who logged in (if anyone), the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    login: str | None
    message: EmailMessage
    raw: bytes


class TestCA:
    """A certificate authority of our own and a certificate for 127.0.0.1 signed by it."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.ca_file = directory / "test-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server_cert = self.ca.issue_cert("127.0.0.1", "localhost")

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(context)
        return context


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SMTPServer:
    """aiosmtpd in a thread; `security` is "starttls", "ssl" or "none"; `logins` user -> password."""

    def __init__(
        self,
        *,
        port: int | None = None,
        security: str = "none",
        ca: TestCA | None = None,
        logins: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.received: list[Received] = []
        self.refused_logins: list[str] = []
        self._lock = threading.Lock()
        self._logins = logins or {}
        options: dict[str, Any] = {}
        if security != "none":
            assert ca is not None, "TLS needs a TestCA"
            if security == "ssl":
                options["ssl_context"] = ca.server_context()
            else:
                options.update(tls_context=ca.server_context(), require_starttls=True)
        if logins is not None:
            options.update(authenticator=self._authenticate, auth_require_tls=security != "none")
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **options)

    def _authenticate(
        self, _server: SMTP, _session: Session, _envelope: Envelope, _mechanism: str, data: object
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            login, password = data.login.decode(), data.password.decode()
            if self._logins.get(login) == password:
                return AuthResult(success=True, auth_data=data)
            with self._lock:
                self.refused_logins.append(login)
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, _server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or b""
        login = session.login_data.decode() if isinstance(session.login_data, bytes) else None
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.received.append(Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), login, message, raw))
        return "250 Message accepted for delivery"

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages()) >= count:
                return self.messages()
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {count} messages; got {len(self.messages())}")

    def __enter__(self) -> SMTPServer:
        self._controller.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._controller.stop()
