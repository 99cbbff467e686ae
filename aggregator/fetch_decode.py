"""Bounded decoding of a response body's Content-Encoding, for `fetch`.

Each decoder gives at most about the number of bytes asked for and keeps the rest of its
input for the next call, so a gzip or brotli bomb never inflates past the size cap: the
caller asks for one byte more than it accepts and stops there. gzip may come in several
members, deflate with or without its zlib header; several encodings are undone in reverse
order, each stage capped the same way; an encoding we cannot read is refused.
"""

from __future__ import annotations

import zlib
from typing import Protocol

from aggregator.errors import FetchError

try:
    import brotli  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - httpx[brotli] installs it
    brotli = None

# Only bounded decoding is safe against bombs; an older brotli without an output
# limit would have to inflate a whole network chunk at once, so br is not offered.
BROTLI_BOUNDED = brotli is not None and hasattr(brotli.Decompressor, "can_accept_more_data")

_GZIP_MAGIC = b"\x1f\x8b"


class Decoder(Protocol):
    def decode(self, data: bytes, limit: int) -> bytes:
        """Decode the next chunk, returning at most about `limit` bytes.

        Returning `limit` bytes or more means the output was cut there; the caller
        asks for one byte more than it will accept, so it then stops reading. Input
        not decoded because of the limit is kept for the next call, never dropped.
        """
        ...

    def pending(self) -> bool:
        """Whether input is held back that `decode(b"", limit)` would go on with."""
        ...

    def unfinished(self) -> str | None:
        """The encoding whose stream was started but has not reached its end, if any."""
        ...


class _Identity:
    def decode(self, data: bytes, limit: int) -> bytes:
        return data

    def pending(self) -> bool:
        return False

    def unfinished(self) -> str | None:
        return None


class _Zlib:
    """gzip (several members allowed) or deflate (with or without the zlib header)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._gzip = name in ("gzip", "x-gzip")
        self._wbits = zlib.MAX_WBITS | 16 if self._gzip else zlib.MAX_WBITS
        self._inflate = zlib.decompressobj(self._wbits)
        self._started = False
        self._fed = False
        self._held = b""

    def decode(self, data: bytes, limit: int) -> bytes:
        data, self._held = self._held + data, b""
        self._fed = self._fed or bool(data)
        out = bytearray()
        while data:
            if len(out) >= limit:
                self._held = data
                break
            out += self._decompress(data, limit - len(out))
            if self._inflate.unconsumed_tail:  # the output limit was reached
                self._held = self._inflate.unconsumed_tail
                break
            data = self._next_member()
        return bytes(out)

    def pending(self) -> bool:
        return bool(self._held)

    def unfinished(self) -> str | None:
        # No bytes at all is an empty body, which parsing names better than we could.
        return self.name if self._fed and not self._inflate.eof else None

    def _next_member(self) -> bytes:
        """The start of the gzip member that follows the one just ended, or b"" (trailing bytes are ignored)."""
        leftover = self._inflate.unused_data
        if not (self._gzip and self._inflate.eof and leftover.startswith(_GZIP_MAGIC)):
            return b""
        self._inflate = zlib.decompressobj(self._wbits)
        return leftover

    def _decompress(self, data: bytes, limit: int) -> bytes:
        try:
            out = self._inflate.decompress(data, limit)
        except zlib.error as exc:
            if self._gzip or self._started:
                raise FetchError(f"could not decompress the {self.name} body: {exc}") from exc
            # Some servers send "deflate" as a raw stream without the zlib header.
            self._wbits = -zlib.MAX_WBITS
            self._inflate = zlib.decompressobj(self._wbits)
            self._started = True
            return self._decompress(data, limit)
        self._started = True
        return out


class _Brotli:
    def __init__(self) -> None:
        assert brotli is not None
        self._inflate = brotli.Decompressor()
        self._fed = False
        self._held = b""

    def decode(self, data: bytes, limit: int) -> bytes:
        self._fed = self._fed or bool(data)
        self._held += data
        out = bytearray()
        try:
            while len(out) < limit:
                if not self._inflate.can_accept_more_data():  # output it could not give last time
                    more = self._inflate.process(b"", output_buffer_limit=limit - len(out))
                    if not more:
                        break  # never spin here: the deadline cannot fire inside this loop
                    out += more
                elif self._held:
                    data, self._held = self._held, b""
                    out += self._inflate.process(data, output_buffer_limit=limit - len(out))
                else:
                    break
        except brotli.error as exc:
            raise FetchError(f"could not decompress the br body: {exc}") from exc
        return bytes(out)

    def pending(self) -> bool:
        return bool(self._held) or not self._inflate.can_accept_more_data()

    def unfinished(self) -> str | None:
        return "br" if self._fed and not self._inflate.is_finished() else None


class _Chain:
    """Several Content-Encodings, undone in reverse order; each stage is capped the same way."""

    def __init__(self, decoders: list[Decoder]) -> None:
        self._decoders = decoders

    def decode(self, data: bytes, limit: int) -> bytes:
        for decoder in self._decoders:
            data = decoder.decode(data, limit)
        return data

    def pending(self) -> bool:
        return any(decoder.pending() for decoder in self._decoders)

    def unfinished(self) -> str | None:
        return next((name for decoder in self._decoders if (name := decoder.unfinished())), None)


def content_encodings(header: str | None) -> list[str]:
    """The Content-Encodings named in `header`, in the order they were applied (identity left out)."""
    names = (name.strip().lower() for name in (header or "").split(","))
    return [name for name in names if name and name != "identity"]


def decoder_for(header: str | None) -> Decoder:
    """A bounded decoder for the response's Content-Encoding; unknown encodings are refused."""
    decoders: list[Decoder] = []
    for name in reversed(content_encodings(header)):
        if name in ("gzip", "x-gzip", "deflate"):
            decoders.append(_Zlib(name))
        elif name == "br" and BROTLI_BOUNDED:
            decoders.append(_Brotli())
        else:
            raise FetchError(f"the server sent the body in an encoding we cannot read ({name!r})")
    if not decoders:
        return _Identity()
    return decoders[0] if len(decoders) == 1 else _Chain(decoders)
