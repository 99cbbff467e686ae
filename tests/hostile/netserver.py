"""Hostile and broken servers on 127.0.0.1, for the network robustness tests.

`hostile_site` fills a `FeedServer` with one route per way a server can waste our
time or memory (an endless body, a body far over the cap, a gzip bomb, a body or
a whole response dripped a byte at a time, a request never answered, a redirect
loop, a redirect chain too long), sized for the limits under test. `Blackhole` is
the one case FeedServer cannot play: a port whose connections the kernel accepts
and nobody ever reads.
"""

from __future__ import annotations

import functools
import gzip
import socket
import struct
import zlib
from dataclasses import dataclass
from types import TracebackType

import brotli  # type: ignore[import-untyped]

from tests.feedserver import FeedServer

MIB = 1 << 20
# Headers of a gzip member: magic, deflate, no flags, no mtime, best compression, unknown OS;
# the second announces a comment (FCOMMENT), a zero-terminated string of any length.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
_GZIP_HEADER_WITH_COMMENT = b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x02\xff"
_BLACKHOLE_BACKLOG = 64


class Blackhole:
    """A listening socket that never accepts: connecting works, the request is never read or answered."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(_BLACKHOLE_BACKLOG)

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def url(self, path: str = "/feed.xml") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@functools.cache
def gzip_bomb(inflated_mib: int) -> bytes:
    """One gzip member of about a thousandth of its size that inflates to `inflated_mib` MiB of zeros.

    Built without compressing the whole thing: after a full flush the deflate state is
    reset, so every further MiB of zeros compresses to the same bytes, and the stream is
    the first MiB's block, that block repeated, the final block and the gzip trailer.
    """
    block = bytes(MIB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(inflated_mib):
        crc = zlib.crc32(block, crc)
    trailer = struct.pack("<II", crc, (inflated_mib * MIB) & 0xFFFFFFFF)
    return _GZIP_HEADER + first + again * (inflated_mib - 1) + deflate.flush() + trailer


@functools.cache
def brotli_bomb(inflated_mib: int) -> bytes:
    """A brotli stream of a few KiB that inflates to `inflated_mib` MiB of zeros, built a MiB at a time."""
    block = bytes(MIB)
    packer = brotli.Compressor(quality=5)
    parts = [bytes(packer.process(block)) for _ in range(inflated_mib)]
    return b"".join(parts) + bytes(packer.finish())


@functools.cache
def stacked_bomb(inflated_mib: int) -> bytes:
    """A gzip bomb gzipped again (sent as "gzip, gzip"): a few KiB that inflate to `inflated_mib` MiB."""
    return gzip.compress(gzip_bomb(inflated_mib), compresslevel=9)


@dataclass(frozen=True)
class HostileCase:
    """One hostile feed: where it is, what it does, and what its last_error must say."""

    name: str
    url: str
    does: str
    expected_error: str


@dataclass(frozen=True)
class Scale:
    """The limits a site is built against: bodies outgrow `max_bytes`, drips outlast `timeout_seconds`."""

    timeout_seconds: float
    max_bytes: int
    max_redirects: int = 10

    @property
    def timeout_text(self) -> str:
        return f"timed out after {self.timeout_seconds:g} s"

    @property
    def size_text(self) -> str:
        return f"response larger than {_size_words(self.max_bytes)}"


def _size_words(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:g} {unit}"
    return f"{count} bytes"


CASE_NAMES = (
    "endless",
    "huge",
    "huge-no-length",
    "gzip-bomb",
    "br-bomb",
    "stacked-bomb",
    "gzip-comment",
    "drip-body",
    "drip-headers",
    "hang",
    "blackhole",
    "redirect-loop",
    "redirect-chain",
)


def hostile_site(server: FeedServer, blackhole: Blackhole, scale: Scale) -> list[HostileCase]:
    """Serve every hostile case on `server` (and `blackhole`) and say what each must produce.

    The cases come in the order of CASE_NAMES.
    """
    oversize = max(scale.max_bytes * 8 // 3, MIB)  # "far over": more than twice the cap
    bomb_mib = max(64, scale.max_bytes * 64 // MIB)
    drip = scale.timeout_seconds / 7  # several bytes get through; the whole never does
    too_large, timed_out = scale.size_text, scale.timeout_text
    rss_head = b'<?xml version="1.0"?><rss version="2.0"><channel><title>slow</title>' + b" " * 4096
    raw_head = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: %d\r\n\r\n" % len(rss_head)

    server.add("/endless", endless=True)
    server.add("/huge", bytes(oversize), compress="identity")
    close_delimited = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nConnection: close\r\n\r\n"
    server.add("/huge-no-length", raw=close_delimited + bytes(oversize))
    bomb = gzip_bomb(bomb_mib)
    server.add("/bomb", bomb, compress="identity", headers={"Content-Encoding": "gzip"})
    br_bomb = brotli_bomb(bomb_mib)
    server.add("/br-bomb", br_bomb, compress="identity", headers={"Content-Encoding": "br"})
    stacked = stacked_bomb(bomb_mib)
    server.add("/stacked-bomb", stacked, compress="identity", headers={"Content-Encoding": "gzip, gzip"})
    # All header and no data: decodes to nothing however much of it arrives.
    endless_comment = _GZIP_HEADER_WITH_COMMENT + b"x" * oversize
    server.add("/gzip-comment", endless_comment, compress="identity", headers={"Content-Encoding": "gzip"})
    server.add("/drip-body", rss_head, drip_seconds=drip, conditional=False, compress="identity")
    server.add("/drip-headers", raw=raw_head + rss_head, drip_seconds=drip)
    server.add("/hang", hang=True)
    server.redirect("/loop/a", "/loop/b", status=302)
    server.redirect("/loop/b", "/loop/a", status=301)
    hops = scale.max_redirects + 5
    for hop in range(hops):
        server.redirect(f"/chain/{hop}", f"/chain/{hop + 1}", status=302 if hop % 2 else 301)
    server.add(f"/chain/{hops}", b'<?xml version="1.0"?><rss version="2.0"><channel><title>end</title></channel></rss>')

    return [
        HostileCase("endless", server.url("/endless"), "chunked zeros that never end", too_large),
        HostileCase("huge", server.url("/huge"), f"{oversize // MIB} MiB body, Content-Length declared", too_large),
        HostileCase(
            "huge-no-length", server.url("/huge-no-length"), f"{oversize // MIB} MiB body, no length", too_large
        ),
        HostileCase(
            "gzip-bomb",
            server.url("/bomb"),
            f"gzip bomb: {len(bomb) // 1024} KiB inflating to {bomb_mib} MiB",
            too_large,
        ),
        HostileCase(
            "br-bomb",
            server.url("/br-bomb"),
            f"brotli bomb: {len(br_bomb) // 1024} KiB inflating to {bomb_mib} MiB",
            too_large,
        ),
        HostileCase(
            "stacked-bomb",
            server.url("/stacked-bomb"),
            f"gzip, gzip bomb: {len(stacked) // 1024} KiB inflating to {bomb_mib} MiB",
            too_large,
        ),
        HostileCase(
            "gzip-comment",
            server.url("/gzip-comment"),
            f"gzip header with a {oversize // MIB} MiB comment, no data",
            too_large,
        ),
        HostileCase("drip-body", server.url("/drip-body"), f"body 1 byte every {drip:.2g} s", timed_out),
        HostileCase("drip-headers", server.url("/drip-headers"), f"response 1 byte every {drip:.2g} s", timed_out),
        HostileCase("hang", server.url("/hang"), "reads the request, never answers", timed_out),
        HostileCase("blackhole", blackhole.url(), "connection accepted, never read", timed_out),
        HostileCase(
            "redirect-loop",
            server.url("/loop/a"),
            "301/302 between two URLs",
            f"redirect loop at {server.url('/loop/a')}",
        ),
        HostileCase(
            "redirect-chain",
            server.url("/chain/0"),
            f"{hops}-hop redirect chain",
            f"too many redirects (more than {scale.max_redirects})",
        ),
    ]
