"""The node agent's HTTP client for the coordinator's node routes (docs/api.md).

Connection errors, 5xx answers (but 507, a full disk) and 429 (too many failed
authentications from this address) are retried with a capped exponential backoff until
the call succeeds or the agent stops: a coordinator restart costs a pause, not a lost
report. An instance's calls also give up when it is cancelled or past its deadline
(:func:`abandon_when`). A 401 calls ``on_unauthorized`` (the agent re-enrols) and
retries once.

Several coordinators (one active, standbys on the same PostgreSQL database,
docs/scale.md) are given as one comma-separated URL list. A call that cannot reach
the current one, or that a standby refuses (503 ``coord.standby``), moves on at once to
the coordinator the standby named, else to the next URL; the backoff pause comes only
after every URL failed in a row, so a failover costs one pass over the list.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json as _json
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import msgpack
from pydantic import ValidationError

from shoal._api.schemas import INSTRUCTION, EnrolAnswer, EnrolBody, HeartbeatBody, Instruction
from shoal._errors import ShoalError
from shoal._store.blobs import write_hashed

from .transport import Reply, Transport, TransportError

log = logging.getLogger("shoal.node")

CHUNK = 1 << 20
MSGPACK = "application/msgpack"
# The coordinator's disk is full: retrying cannot help until an operator frees space, so
# the call fails (and with it the instance that made it) instead of retrying for ever.
INSUFFICIENT_STORAGE = 507
DISK_FULL_CODES = frozenset({"storage.full", "node.disk_full"})
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class Stopped(ShoalError):
    """The agent is stopping; the call was abandoned."""

    code = "node.stopped"


class Abandoned(ShoalError):
    """The instance that made the call no longer needs its answer (it was cancelled or
    ran past its deadline): the call stopped retrying."""

    code = "node.abandoned"


_abandon = threading.local()
_ABANDON_TICK_S = 0.2  # how often a pause between tries asks whether to give up


@contextlib.contextmanager
def abandon_when(reason: Callable[[], str | None]) -> Iterator[None]:
    """Within the block, this thread's calls stop retrying once ``reason()`` returns a
    reason (they raise :class:`Abandoned`): an instance's calls must not keep its thread
    past its cancel or its deadline while the coordinator is unreachable."""
    previous = getattr(_abandon, "reason", None)
    _abandon.reason = reason
    try:
        yield
    finally:
        _abandon.reason = previous


def _check_abandoned() -> None:
    reason: Callable[[], str | None] | None = getattr(_abandon, "reason", None)
    why = None if reason is None else reason()
    if why is not None:
        raise Abandoned(f"gave up calling the coordinator: {why}")


class Rejected(ShoalError):
    """The coordinator answered with a 4xx error (or 507: its storage is full)."""

    def __init__(self, status: int, code: str, message: str, hint: str | None) -> None:
        super().__init__(f"coordinator answered {status}: {message}", code=code, hint=hint)
        self.status = status


#: A standby's refusal: the request goes to the active coordinator instead.
STANDBY = "coord.standby"
#: The header in which a standby names the active coordinator.
ACTIVE_HEADER = "X-Shoal-Active"


def split_urls(urls: str) -> list[str]:
    """The coordinator URLs of a comma-separated list (trailing slashes dropped)."""
    found = [u.strip().rstrip("/") for u in urls.split(",") if u.strip()]
    if not found:
        raise ShoalError(
            f"no coordinator URL in {urls!r}",
            code="node.config",
            hint='give coordinator = "https://coord:8750" (several: comma-separated)',
        )
    return found


def _standby(resp: Reply) -> bool:
    if resp.status_code != 503:
        return False
    try:
        return bool(resp.json()["error"]["code"] == STANDBY)
    except Exception:
        return False


class Backoff:
    """Capped exponential backoff with jitter; waits end early when ``stop`` is set."""

    def __init__(self, stop: threading.Event, cap_s: float, base_s: float = 0.2) -> None:
        self._stop = stop
        self._cap = cap_s
        self._base = base_s
        self._n = 0

    @property
    def tries(self) -> int:
        """Pauses taken since the last success."""
        return self._n

    def reset(self) -> None:
        """Start over after a success."""
        self._n = 0

    def pause(self) -> None:
        """Wait before the next try; raise Stopped if the agent stops meanwhile, or
        Abandoned if this thread's calls are abandoned (:func:`abandon_when`)."""
        delay = min(self._cap, self._base * 2**self._n) * random.uniform(0.5, 1.0)
        self._n = min(self._n + 1, 30)
        end = time.monotonic() + delay
        while True:
            _check_abandoned()
            left = end - time.monotonic()
            if left <= 0:
                return
            if self._stop.wait(min(left, _ABANDON_TICK_S)):
                raise Stopped("the agent is stopping")


def _raise_for(resp: Reply) -> None:
    if resp.status_code >= 400:
        _raise_for_status(resp.status_code, resp.content)


def _raise_for_status(status: int, body: bytes) -> None:
    try:
        err = _json.loads(body)["error"]
        code, message, hint = err["code"], err["message"], err.get("hint")
    except Exception:  # not our error shape (a proxy in between, ...)
        code, message, hint = f"http.{status}", body[:500].decode(errors="replace"), None
    raise Rejected(status, code, message, hint)


def _read_into(resp: http.client.HTTPResponse) -> Iterator[memoryview]:
    # One reused buffer: write_hashed is done with a chunk before it asks for the next.
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n := resp.readinto(buf):
        yield view[:n]


def file_chunks(path: Path, offset: int, length: int) -> Iterator[bytes]:
    """The bytes of a file slice, in chunks. The last path component must not be a
    symlink (a task controls the folders its values are read from)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        left = length
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                raise OSError(f"{path} is shorter than the value it should hold")
            left -= len(data)
            yield data


class CoordinatorClient:
    """Calls the coordinator on behalf of one node.

    Parameters
    ----------
    base_url
        The coordinator's URL, or several coordinators' URLs separated by commas (one
        active, the others standbys): calls go to the one that answers as active.
    stop
        Set when the agent stops; pending retries give up.
    retry_max_s
        The longest pause between retries.
    verify
        TLS verification: True (the system's CAs), or a context trusting a given CA.
    """

    def __init__(
        self,
        base_url: str,
        stop: threading.Event,
        retry_max_s: float = 30.0,
        verify: bool | ssl.SSLContext = True,
    ) -> None:
        self.urls = split_urls(base_url)
        self._at = 0  # index of the coordinator calls go to
        self._misses = 0  # calls that failed in a row, on any coordinator
        self._switch = threading.Lock()
        context = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
        if verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._http = Transport(context, connect_timeout_s=10.0, read_timeout_s=30.0)
        self._stop = stop
        self._retry_max_s = retry_max_s
        self.credential: str | None = None
        # Called with the rejected credential; the agent enrols again.
        self.on_unauthorized: Callable[[str | None], None] | None = None

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    @property
    def url(self) -> str:
        """The coordinator calls go to now."""
        return self.urls[self._at]

    def _missed(self, url: str, why: str, active: str | None = None) -> bool:
        """A call to ``url`` failed (unreachable, or a standby): move on to ``active`` if
        it is one of ours, else the next URL. Returns whether to pause before the next
        try: only once every URL failed in a row."""
        with self._switch:
            self._misses += 1
            if len(self.urls) == 1:
                return True
            if self.urls[self._at] == url:  # another thread may have moved on already
                if active is not None and active.rstrip("/") in self.urls:
                    self._at = self.urls.index(active.rstrip("/"))
                else:
                    self._at = (self._at + 1) % len(self.urls)
                log.warning("coordinator %s %s; trying %s", url, why, self.urls[self._at])
            return self._misses % len(self.urls) == 0

    def _answered(self) -> None:
        self._misses = 0

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"} if self.credential else {}

    def call(
        self,
        method: str,
        path: str,
        *,
        retry: bool = True,
        retry_full: bool = False,
        reauth: bool = True,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        content_factory: Callable[[], Iterator[bytes]] | None = None,
    ) -> Reply:
        """One request; retried on connection errors and 5xx while ``retry``.

        The body is ``json`` (sent as JSON), ``content`` or, made fresh for every try,
        ``content_factory``'s chunks. A 507 (the coordinator's disk is full) is retried
        only with ``retry_full``: reports that the swarm needs to end (``started``,
        ``done``) wait for space; a world call or an upload fails, and with it its
        instance.
        """
        headers = dict(headers or {})
        if json is not None:
            content = _json.dumps(json, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if params:
            path += "?" + urlencode(params)
        backoff = Backoff(self._stop, self._retry_max_s)
        while True:
            if self._stop.is_set():
                raise Stopped("the agent is stopping")
            _check_abandoned()
            used = self.credential
            url = self.url
            try:
                body = content if content_factory is None else content_factory()
                resp = self._http.request(
                    method, url + path, {**self._headers(), **headers}, body, timeout
                )
            except TransportError as e:
                pause = self._missed(url, f"is unreachable ({e})")
                if not retry:
                    raise
                if pause:
                    # Once per outage, not once per try.
                    (log.debug if backoff.tries else log.warning)(
                        "coordinator unreachable (%s); retrying", e
                    )
                    backoff.pause()
                continue
            if _standby(resp):
                pause = self._missed(url, "is a standby", resp.headers.get(ACTIVE_HEADER))
                if not retry:
                    _raise_for(resp)
                if pause:
                    backoff.pause()
                continue
            self._answered()
            full = resp.status_code == INSUFFICIENT_STORAGE
            transient = resp.status_code >= 500 or resp.status_code == 429
            if transient and retry and (retry_full or not full):
                (log.debug if backoff.tries else log.warning)(
                    "coordinator answered %d; retrying", resp.status_code
                )
                backoff.pause()
                continue
            if resp.status_code == 401 and reauth and self.on_unauthorized is not None:
                reauth = False
                self.on_unauthorized(used)
                continue
            _raise_for(resp)
            return resp

    # ------------------------------------------------------------------- routes
    def enrol(
        self, join_token: str, node_id: str, offer: dict[str, Any], proposed: str | None = None
    ) -> str:
        """Enrol with the join token; return the new credential (``proposed``, the one
        the node chose, if given: a repeat after a lost answer is then answered the
        same)."""
        body = EnrolBody(join_token=join_token, node_id=node_id, credential=proposed, **offer)
        resp = self.call("POST", "/v1/nodes/enrol", json=body.model_dump(), reauth=False)
        return EnrolAnswer.model_validate(resp.json()).credential

    def rotate_credential(self, new: str) -> None:
        """Make ``new`` this node's credential (authorised by the current one, which
        stops working). Safe to repeat: when an earlier try's answer was lost, the
        current credential is refused and ``new`` is then tried as the bearer."""
        body = {"credential": new}
        try:
            self.call("POST", "/v1/nodes/credential", json=body, reauth=False)
        except Rejected as e:
            if e.status != 401 or self.credential == new:
                raise
            self.credential = new
            self.call("POST", "/v1/nodes/credential", json=body, reauth=False)
        self.credential = new

    def heartbeat(self, body: HeartbeatBody) -> None:
        """Say the node is alive (one try: the next heartbeat is the retry)."""
        self.call("POST", "/v1/nodes/heartbeat", json=body.model_dump(), retry=False)

    def instructions(self, wait: float, after: int) -> tuple[list[Instruction], int]:
        """Long-poll this node's instructions, acknowledging those up to ``after``.

        Returns the instructions decoded and the highest ``seq`` received (an
        instruction this agent cannot read is logged and skipped, but acknowledged).
        """
        resp = self.call(
            "GET",
            "/v1/nodes/instructions",
            params={"wait": wait, "after": after},
            timeout=wait + 30.0,
        )
        items = resp.json()
        if not isinstance(items, list):
            raise ShoalError("instructions are not a list", code="node.protocol")
        decoded: list[Instruction] = []
        for item in items:
            seq = item.get("seq") if isinstance(item, dict) else None
            if isinstance(seq, int) and not isinstance(seq, bool):
                after = max(after, seq)
            try:
                decoded.append(INSTRUCTION.validate_python(item))
            except ValidationError as e:
                kind = item.get("kind") if isinstance(item, dict) else None
                log.warning("ignoring an instruction this agent cannot read (%r): %s", kind, e)
        return decoded, after

    def started(self, instance_id: str) -> None:
        """Report that an instance started."""
        self.call("POST", f"/v1/instances/{quote(instance_id)}/started", retry_full=True)

    def done(self, instance_id: str, body: dict[str, Any]) -> None:
        """Report how an instance ended (as msgpack when it carries world calls: their
        values are bytes)."""
        path = f"/v1/instances/{quote(instance_id)}/done"
        if not body.get("calls"):
            self.call("POST", path, json=body, retry_full=True)
            return
        data = msgpack.packb(body, use_bin_type=True)
        self.call("POST", path, content=data, headers={"Content-Type": MSGPACK}, retry_full=True)

    def world(self, instance_id: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Forward one world operation; answers ``{ok: value}`` or ``{error: ...}``."""
        data = msgpack.packb(
            {"instance_id": instance_id, "op": op, "args": args}, use_bin_type=True
        )
        resp = self.call("POST", "/v1/world", content=data, headers={"Content-Type": MSGPACK})
        reply = msgpack.unpackb(resp.content, raw=False)
        if not isinstance(reply, dict):
            raise ShoalError("world reply is not a map", code="node.protocol")
        return reply

    def download(self, path: str, dest: Path, digest: str) -> int:
        """GET ``path`` into ``dest`` (atomically), checking the sha256; return its size.

        The body is read into one reused 1 MiB buffer, and hashed and written as it
        comes: a value of gigabytes never sits in memory.
        """
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        backoff = Backoff(self._stop, self._retry_max_s)
        while True:
            if self._stop.is_set():
                raise Stopped("the agent is stopping")
            url = self.url
            try:
                with self._http.stream("GET", url + path, self._headers()) as resp:
                    if resp.status >= 500:
                        active = resp.getheader(ACTIVE_HEADER) if resp.status == 503 else None
                        if len(self.urls) > 1 and not self._missed(url, "did not serve", active):
                            continue  # the next coordinator at once
                        raise OSError(f"coordinator answered {resp.status}")
                    if resp.status >= 400:
                        _raise_for_status(resp.status, resp.read())
                    with tmp.open("wb", buffering=0) as f:
                        got, size = write_hashed(_read_into(resp), f)
                break
            except (TransportError, OSError, http.client.HTTPException) as e:
                tmp.unlink(missing_ok=True)
                moved = isinstance(e, TransportError | ConnectionError) and len(self.urls) > 1
                if moved and not self._missed(url, f"is unreachable ({e})"):
                    continue  # the next coordinator at once
                if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
                    raise ShoalError(
                        f"the node's disk is full: {path} could not be saved to {dest.parent}",
                        code="node.disk_full",
                        hint="free disk space in the node's state_dir",
                    ) from None
                (log.debug if backoff.tries else log.warning)(
                    "download of %s failed (%s); retrying", path, e
                )
                backoff.pause()
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        if got != digest:
            tmp.unlink(missing_ok=True)
            raise ShoalError(f"{path} does not match its digest", code="node.digest")
        os.replace(tmp, dest)
        return size

    def upload(self, digest: str, path: Path, offset: int, length: int) -> None:
        """PUT a file slice as the blob ``digest`` (streamed)."""
        self.call(
            "PUT",
            f"/v1/blobs/{digest}",
            content_factory=lambda: file_chunks(path, offset, length),
            headers={"Content-Length": str(length)},
        )
