"""The node agent's HTTP/1.1 transport: ``http.client`` connections kept alive in a pool.

An agent makes three requests per instance of a warm task (the long poll that brings
it, a world call, the report of its end), and every agent of a site shares the machine
with its tasks. httpx's request and response models cost three to five times the CPU
of ``http.client`` per request on loopback (0.46 against 0.12 ms for a small answer,
1.0 against 0.18 ms for a 400 KB one), so the agent speaks HTTP through this instead.

Proxies are honoured as httpx did: ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` (an
``https`` coordinator is reached through a ``CONNECT`` tunnel, an ``http`` one with the
absolute URL as the request target).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
import threading
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import SplitResult, urlsplit

#: Idle connections kept per coordinator (more are opened when threads need them).
MAX_IDLE = 16
#: Errors of a kept-alive connection the server closed meanwhile: the request is sent
#: again at once on a new connection, as browsers and urllib3 do.
_STALE = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)

_Key = tuple[str, str, int]


class TransportError(Exception):
    """No answer came: the connection could not be made, broke, or timed out."""


@dataclass(frozen=True)
class Reply:
    """A whole answer: its status, headers (case-insensitive) and body."""

    status_code: int
    headers: Message
    content: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.content)


class Transport:
    """Keep-alive HTTP/1.1 connections to the coordinators, shared by the agent's threads.

    Parameters
    ----------
    context
        TLS settings for ``https`` URLs.
    connect_timeout_s
        The longest wait for a connection (and a proxy's tunnel).
    read_timeout_s
        The longest wait for each read of an answer, unless a request gives its own.
    """

    def __init__(
        self, context: ssl.SSLContext, connect_timeout_s: float, read_timeout_s: float
    ) -> None:
        self._context = context
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._idle: dict[_Key, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False
        # The proxy of each coordinator, read from the environment once (it walks
        # every variable: not work for every request).
        self._proxies: dict[_Key, SplitResult | None] = {}

    def close(self) -> None:
        """Close the idle connections (those in use close when their request ends)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | Iterable[bytes] | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """Send one request and read its whole answer.

        ``body`` may be an iterable of chunks (then ``headers`` should give its
        ``Content-Length``; without one it is sent chunked).

        Raises
        ------
        TransportError
            If no answer came.
        """
        with self.stream(method, url, headers, body, timeout_s) as resp:
            try:
                content = resp.read()
            except (OSError, http.client.HTTPException) as e:
                raise TransportError(f"{type(e).__name__}: {e}") from e
            return Reply(resp.status, resp.headers, content)

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | Iterable[bytes] | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[http.client.HTTPResponse]:
        """Send one request; yield its answer to be read within the block. The
        connection goes back to the pool if the answer was read to its end.

        Raises
        ------
        TransportError
            If no answer came.
        """
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "", parts.port or _default_port(parts))
        target = _target(parts, self._proxy(key, parts))
        replayable = body is None or isinstance(body, bytes | bytearray | memoryview)
        timeout = self._read_timeout_s if timeout_s is None else timeout_s
        if not replayable and not any(k.lower() == "content-length" for k in headers):
            send: dict[str, Any] = {"encode_chunked": True}
        else:
            send = {}
        while True:
            conn, reused = self._take(key, parts)
            try:
                if conn.sock is None:
                    conn.connect()
                assert conn.sock is not None  # connect() made it
                conn.sock.settimeout(timeout)
                conn.request(method, target, body=body, headers=headers, **send)
                resp = conn.getresponse()
            except _STALE as e:
                conn.close()
                if reused and replayable:
                    continue  # the server closed it while idle: once more on a new one
                raise TransportError(f"{type(e).__name__}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise TransportError(f"{type(e).__name__}: {e}") from e
            except BaseException:
                conn.close()
                raise
            break
        try:
            yield resp
        except BaseException:
            conn.close()
            raise
        if resp.isclosed() and not resp.will_close:
            self._give(key, conn)
        else:
            conn.close()  # unread body, or the server ends the connection

    def _take(self, key: _Key, parts: SplitResult) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        return self._connection(parts, self._proxy(key, parts)), False

    def _give(self, key: _Key, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if not self._closed and len(idle) < MAX_IDLE:
                idle.append(conn)
                return
        conn.close()

    def _proxy(self, key: _Key, parts: SplitResult) -> SplitResult | None:
        if key not in self._proxies:
            found = None
            if not urllib.request.proxy_bypass(parts.hostname or ""):
                found = urllib.request.getproxies().get(parts.scheme)
            proxy = urlsplit(found if "://" in found else f"http://{found}") if found else None
            self._proxies[key] = proxy  # racing threads compute the same
        return self._proxies[key]

    def _connection(
        self, parts: SplitResult, proxy: SplitResult | None
    ) -> http.client.HTTPConnection:
        host, port = parts.hostname or "127.0.0.1", parts.port or _default_port(parts)
        timeout = self._connect_timeout_s
        if proxy is None:
            if parts.scheme == "https":
                return http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=self._context
                )
            return http.client.HTTPConnection(host, port, timeout=timeout)
        via = proxy.hostname or "127.0.0.1", proxy.port or _default_port(proxy)
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(*via, timeout=timeout, context=self._context)
            conn.set_tunnel(host, port)
            return conn
        return http.client.HTTPConnection(*via, timeout=timeout)


def _default_port(parts: SplitResult) -> int:
    return 443 if parts.scheme == "https" else 80


def _target(parts: SplitResult, proxy: SplitResult | None) -> str:
    """The request target: the path, or the absolute URL for a plain HTTP proxy."""
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if proxy is not None and parts.scheme == "http":
        return f"http://{parts.netloc}{path}"
    return path
