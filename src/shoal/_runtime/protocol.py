"""Length-prefixed msgpack frames over a stream socket. Never pickle.

A frame is an 8-byte big-endian length followed by one msgpack map. Requests carry an
``id``; notifications (logs, metrics) carry ``id = None`` and get no reply.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack

from shoal._errors import ShoalError

_LEN = struct.Struct(">Q")
MAX_FRAME = 1 << 34  # 16 GiB: a sanity bound, not a payload ceiling (big values go by file)


class ChannelClosed(ShoalError):
    """The other end of a channel went away."""

    code = "channel.closed"


def frame(msg: dict[str, Any]) -> bytes:
    """One frame's bytes (for :func:`send_frames`)."""
    body: bytes = msgpack.packb(msg, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def send(sock: socket.socket, msg: dict[str, Any]) -> None:
    """Send one frame."""
    body = msgpack.packb(msg, use_bin_type=True)
    header = _LEN.pack(len(body))
    if len(body) < 65536:
        sock.sendall(header + body)  # one syscall for the common small frame
    else:
        sock.sendall(header)
        sock.sendall(body)  # no concatenation copy of a large body


def send_frames(sock: socket.socket, frames: list[bytes]) -> None:
    """Send frames made by :func:`frame` with one system call (one wake-up of the reader)."""
    sock.sendall(frames[0] if len(frames) == 1 else b"".join(frames))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ChannelClosed("channel closed by the other end")
        got += k
    return bytes(buf)


def _check_length(n: int) -> None:
    if n > MAX_FRAME:
        raise ShoalError(f"frame of {n} bytes exceeds the bound", code="channel.frame")


def _message(body: bytes | memoryview) -> dict[str, Any]:
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as e:
        raise ShoalError(f"malformed frame: {e}", code="channel.frame") from e
    if not isinstance(msg, dict):
        raise ShoalError("malformed frame: not a map", code="channel.frame")
    return msg


def recv(sock: socket.socket) -> dict[str, Any]:
    """Receive one frame (blocking)."""
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    _check_length(n)
    return _message(_recv_exact(sock, n))


class FrameReader:
    """Incremental frame decoder for non-blocking reads in an event loop.

    A bad frame (too long, not msgpack, not a map) breaks the stream: :attr:`broken`
    says why, the frames before it are still returned, and nothing after it is read.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.broken: ShoalError | None = None

    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes | memoryview) -> list[dict[str, Any]]:
        """Add received bytes; return every complete frame."""
        if self.broken is not None:
            return []
        self._buf += data
        out: list[dict[str, Any]] = []
        start = 0
        with memoryview(self._buf) as view:
            try:
                while len(self._buf) - start >= _LEN.size:
                    (n,) = _LEN.unpack_from(self._buf, start)
                    _check_length(n)
                    end = start + _LEN.size + n
                    if len(self._buf) < end:
                        break
                    out.append(_message(view[start + _LEN.size : end]))
                    start = end
            except ShoalError as e:
                self.broken = e
        if self.broken is not None:
            self._buf = bytearray()
            return out
        if start:
            del self._buf[:start]  # once per read, not once per frame
        return out


def error_payload(e: BaseException) -> dict[str, Any]:
    """The wire form of an error raised by a service."""
    if isinstance(e, ShoalError):
        return {"code": e.code, "message": e.message, "hint": e.hint}
    return {"code": "internal", "message": f"{type(e).__name__}: {e}", "hint": None}


def raise_payload(err: dict[str, Any]) -> None:
    """Raise the error described by :func:`error_payload` in the caller's process."""
    raise ShoalError(err["message"], code=err.get("code") or "remote", hint=err.get("hint"))
