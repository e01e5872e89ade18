"""``shoal.Client``: the user side of the coordinator's HTTP API (docs/api.md).

Synchronous, on httpx. Every failure is a :class:`~shoal.ShoalError` that says what to
do next: the coordinator's own ``{code, message, hint}`` for an HTTP error, a message
naming the URL when the coordinator cannot be reached.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import ssl
import tempfile
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, TypeVar

import httpx
import msgpack
from pydantic import TypeAdapter

from shoal._api import schemas
from shoal._api.records import (
    TERMINAL,
    LogRecord,
    MetricRecord,
    NodeRecord,
    SwarmStatus,
    SwarmSummary,
)
from shoal._client.config import ca_from_config, resolve
from shoal._client.http import clean, path_part, raise_for_status, sse, wait_timeout
from shoal._client.urls import ACTIVE_HEADER, Coordinators, is_standby, may_move_on, split_urls
from shoal._codec import decode
from shoal._define.swarm import Swarm
from shoal._errors import ShoalError, SwarmFailedError
from shoal._metrics.table import frame_or_records
from shoal._runtime.api import ResultRecord
from shoal._version import __version__

__all__ = ["TERMINAL", "Client"]

T = TypeVar("T")

_CHUNK = 1 << 20
_BLOB_IN_MEMORY = 16 << 20  # blobs below this are read into memory, larger ones mapped
_FAILOVER_PAUSE_S = 0.5  # after every coordinator was tried once, before the next pass
_HOW_TO_START = (
    "start one with `shoal coordinator start`, or `shoal up --nodes N` for a local "
    "federation; or point SHOAL_COORDINATOR or --coordinator at a running one"
)


class Client:
    """A connection to a shoal coordinator, for users: deploy swarms, follow them, read
    their logs, metrics, results and globals, stop them, list nodes.

    Parameters
    ----------
    url
        The coordinator's URL (``https://host:8750``); several coordinators on one
        PostgreSQL database (an active one and standbys): their URLs separated by
        commas, and the client moves on to the active one by itself. Default: the
        environment variable ``SHOAL_COORDINATOR``, else ``coordinator = "..."`` in
        ``~/.config/shoal/config.toml``.
    token
        A user API token. Default: ``SHOAL_TOKEN``, else ``token = "..."`` in the config
        file.
    timeout
        Seconds to wait for the coordinator on each network operation (connect, each
        read, each write). Long-polls and streams add their own wait on top.
    verify
        TLS verification: True (system CAs, or the CA file named by ``SHOAL_CA_CERT`` or
        ``ca_cert = "..."`` in the config file), False (no verification), the path of a
        CA bundle, or an :class:`ssl.SSLContext`.
    failover_s
        With several URLs: how long a request keeps moving from one coordinator to
        the next (unreachable, or a standby) before it fails naming each one's answer.

    Raises
    ------
    ShoalError
        ``client.config`` if the URL or the token cannot be found.

    Examples
    --------
    >>> client = shoal.Client()                                   # doctest: +SKIP
    >>> swarm_id = client.deploy("examples/fedavg_digits/swarm.py")  # doctest: +SKIP
    >>> client.wait(swarm_id, timeout=600).status                 # doctest: +SKIP
    'succeeded'
    >>> client.get_global(swarm_id, "weights")["W"].shape         # doctest: +SKIP
    (64, 10)
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
        failover_s: float = 30.0,
    ) -> None:
        urls, token = resolve(url, token)
        self._coords = Coordinators(split_urls(urls))
        self.failover_s = float(failover_s)
        self.timeout = float(timeout)
        if verify is True and self.url.startswith("https://"):
            verify = ca_from_config() or True
        if isinstance(verify, (str, os.PathLike)):
            ca = os.fspath(verify)
            try:
                verify = ssl.create_default_context(cafile=ca)
            except (OSError, ssl.SSLError) as e:
                raise ShoalError(
                    f"cannot load the CA certificate {ca}: {e}",
                    code="client.config",
                    hint="give the PEM file of the CA that signed the coordinator's certificate",
                ) from None
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"shoal/{__version__}"},
            timeout=self.timeout,
            verify=verify,
        )

    @property
    def url(self) -> str:
        """The coordinator requests go to now (one of :attr:`urls`)."""
        return self._coords.current

    @property
    def urls(self) -> list[str]:
        """Every coordinator URL this client may use."""
        return list(self._coords.urls)

    def __repr__(self) -> str:
        return f"Client({','.join(self._coords.urls)!r})"  # never the token

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        wait: float = 0.0,
    ) -> httpx.Response:
        timeout = httpx.Timeout(self.timeout, read=self.timeout + wait) if wait else None
        answers: dict[str, str] = {}  # what each coordinator did, for the error
        deadline: float | None = None
        tries = 0
        while True:
            url = self.url
            active = None
            try:
                r = self._http.request(
                    method,
                    path,
                    params=clean(params),
                    content=content,
                    headers=headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.HTTPError as e:
                if not self._coords.several or not may_move_on(method, e):
                    raise self._transport_error(e, what) from None
                answers[url] = f"unreachable ({str(e) or type(e).__name__})"
            else:
                if not self._coords.several or not is_standby(r):
                    raise_for_status(r, what)
                    return r
                answers[url] = "a standby"
                active = r.headers.get(ACTIVE_HEADER)
            deadline = deadline or time.monotonic() + self.failover_s
            if time.monotonic() >= deadline:
                raise self._no_active(what, answers)
            self._move_to(active)
            tries += 1
            if tries % len(self._coords.urls) == 0:  # each was tried: wait a little
                time.sleep(min(_FAILOVER_PAUSE_S, max(0.0, deadline - time.monotonic())))

    def _move_to(self, active: str | None = None) -> None:
        """Send the next requests to ``active`` (if ours), else to the next URL."""
        self._http.base_url = httpx.URL(self._coords.move_on(active))

    def _no_active(self, what: str, answers: dict[str, str]) -> ShoalError:
        said = "; ".join(f"{u}: {a}" for u, a in answers.items())
        return ShoalError(
            f"{what}: no coordinator answered as the active one within "
            f"{self.failover_s:g}s ({said})",
            code="client.unreachable",
            hint="check that the coordinators run and that one holds the lease (`GET "
            "/v1/health` says each one's role); a takeover takes about a second",
        )

    def _json(self, method: str, path: str, what: str, **kw: Any) -> Any:
        r = self._request(method, path, what, **kw)
        try:
            return r.json()
        except ValueError:
            raise ShoalError(
                f"{what}: the coordinator at {self.url} answered something that is not JSON",
                code="client.protocol",
                hint="check that the URL points at a shoal coordinator",
            ) from None

    def _typed(self, adapter: TypeAdapter[T], doc: Any, what: str) -> T:
        """``doc`` as the record type of ``adapter`` (``client.protocol`` if it is not)."""
        return schemas.decode(adapter, doc, f"{what}: the answer of {self.url}", "client.protocol")

    def _msgpack(self, path: str, what: str, params: dict[str, Any] | None = None) -> Any:
        r = self._request(
            "GET", path, what, params=params, headers={"Accept": "application/msgpack"}
        )
        try:
            return msgpack.unpackb(r.content, raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            raise ShoalError(
                f"{what}: the coordinator at {self.url} answered something that is not msgpack",
                code="client.protocol",
                hint="check that the URL points at a shoal coordinator of this version",
            ) from None

    def _transport_error(self, e: httpx.HTTPError, what: str) -> ShoalError:
        reason = str(e) or type(e).__name__
        if isinstance(e, httpx.ConnectError) and (
            "SSL" in reason or "certificate" in reason.lower()
        ):
            return ShoalError(
                f"{what}: TLS with the coordinator at {self.url} failed: {reason}",
                code="client.tls",
                hint="give the CA that signed its certificate: SHOAL_CA_CERT, ca_cert in the "
                "config file, or Client(verify=PATH)",
            )
        if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):
            return ShoalError(
                f"{what}: the coordinator at {self.url} is not reachable: {reason}",
                code="client.unreachable",
                hint=_HOW_TO_START,
            )
        if isinstance(e, httpx.TimeoutException):
            return ShoalError(
                f"{what}: the coordinator at {self.url} did not answer within {self.timeout:g}s",
                code="client.timeout",
                hint="check that it is not overloaded, or raise the timeout: Client(timeout=...)",
            )
        return ShoalError(
            f"{what}: the connection to the coordinator at {self.url} failed: {reason}",
            code="client.connection",
            hint="check the URL and that the coordinator is running; then retry",
        )

    # ------------------------------------------------------------------ swarms

    def health(self) -> dict[str, Any]:
        """``{"ok": True, "version": ...}`` if the coordinator is up (needs no token)."""
        result: dict[str, Any] = self._json("GET", "/v1/health", "health check")
        return result

    def deploy(
        self,
        swarm: Swarm | str | os.PathLike[str],
        seed: int = 0,
        task_timeout: float | None = None,
    ) -> str:
        """Compile a swarm and submit it to the coordinator.

        Parameters
        ----------
        swarm
            A :class:`~shoal.Swarm` instance, or ``"path/to/swarm.py[:ClassName]"``.
        seed
            Seed of the coordinator's random choices for this swarm (``method="random"``
            placement): the same seed and nodes give the same placement.

        Returns
        -------
        str
            The new swarm's id.

        Raises
        ------
        ShoalError
            If the file cannot be loaded, the swarm is invalid (every problem at once), or
            the coordinator refuses it.
        """
        from shoal._define.compile import compile_swarm
        from shoal._define.loader import load_swarm

        if isinstance(swarm, Swarm):
            compiled = compile_swarm(swarm)
        else:
            loaded, source = load_swarm(os.fspath(swarm))
            compiled = compile_swarm(loaded, source=source)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ShoalError(
                f"seed={seed!r} is not an int", code="client.seed", hint="pass a whole number"
            )
        doc: dict[str, Any] = {
            "plan": compiled.plan.to_json(),
            "bundles": {d: b.data for d, b in compiled.bundles.items()},
            "seed": seed,
        }
        if task_timeout is not None:
            if (
                isinstance(task_timeout, bool)
                or not isinstance(task_timeout, (int, float))
                or not 0 < task_timeout < math.inf
            ):
                raise ShoalError(
                    f"task_timeout={task_timeout!r} is not a number of seconds > 0",
                    code="client.task_timeout",
                    hint="pass seconds, e.g. task_timeout=1800, or None for the default",
                )
            doc["task_timeout_s"] = float(task_timeout)
        body = msgpack.packb(doc, use_bin_type=True)
        answer = self._json(
            "POST",
            "/v1/swarms",
            f"deploying swarm {compiled.plan.name!r}",
            content=body,
            headers={"Content-Type": "application/msgpack"},
        )
        return str(answer["swarm_id"])

    def swarms(self) -> list[SwarmSummary]:
        """Every swarm, newest first (``swarm_id``, ``name``, ``status``, ``iteration``,
        ``reason``, ``created``)."""
        what = "listing swarms"
        return self._typed(schemas.SWARM_LIST, self._json("GET", "/v1/swarms", what), what)

    def status(self, swarm_id: str) -> SwarmStatus:
        """One swarm's status.

        Returns
        -------
        SwarmStatus
            ``status`` is ``"running"``, ``"succeeded"``, ``"failed"`` or ``"stopped"``;
            ``failures`` lists every failed instance (:class:`~shoal.FailureRecord`:
            node id, kind, error, traceback); ``tasks`` maps each alias to its
            :class:`~shoal.TaskCounts` in the current iteration.
        """
        what = f"status of swarm {swarm_id}"
        doc = self._json("GET", f"/v1/swarms/{path_part(swarm_id)}", what)
        return self._typed(schemas.SWARM_STATUS, doc, what)

    def story(self, instance_id: str) -> list[str]:
        """What happened to one instance, as the coordinator's engine saw it.

        Returns
        -------
        list of str
            One line per transition or engine decision, ``t=<time> #<event id>
            <event>: <detail>`` (e.g. scheduled, started, failed, retried as ...).

        Raises
        ------
        ShoalError
            ``http.404`` if the coordinator never scheduled ``instance_id``.
        """
        doc = self._json(
            "GET", f"/v1/instances/{path_part(instance_id)}/story", f"story of {instance_id}"
        )
        return list(doc["story"])

    def watch(self, swarm_id: str, timeout: float | None = None) -> Iterator[SwarmStatus]:
        """Follow a swarm: yield its status (as :meth:`status`) each time it changes.

        The first status is yielded at once; the iterator ends after the swarm finishes
        (the last status yielded has a final ``status``). A dropped stream is reopened.

        Parameters
        ----------
        swarm_id
            The swarm to follow.
        timeout
            Give up after this many seconds (None: follow until it finishes).

        Raises
        ------
        ShoalError
            ``client.timeout`` (naming the swarm and its last status) when ``timeout``
            passes first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: SwarmStatus | None = None
        what = f"following swarm {swarm_id}"
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise wait_timeout(swarm_id, timeout, last)
            read = None if remaining is None else max(remaining, 0.01)
            try:
                with self._http.stream(
                    "GET",
                    f"/v1/swarms/{path_part(swarm_id)}/events",
                    headers={"Accept": "text/event-stream"},
                    timeout=httpx.Timeout(self.timeout, read=read),
                ) as r:
                    if not r.is_success:
                        r.read()
                        raise_for_status(r, what)
                    for doc in sse(r.iter_lines()):
                        status = self._typed(schemas.SWARM_STATUS, doc, what)
                        last = status
                        yield status
                        if status.finished:
                            return
                        if deadline is not None and time.monotonic() >= deadline:
                            raise wait_timeout(swarm_id, timeout, last)
            except httpx.ReadTimeout:
                raise wait_timeout(swarm_id, timeout, last) from None
            except (httpx.RemoteProtocolError, httpx.ReadError):
                pass  # the stream dropped: look at the status, then reopen it
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                if not self._coords.several:
                    raise self._transport_error(e, what) from None
                self._move_to()  # the status below finds the active one (bounded)
            except httpx.HTTPError as e:
                raise self._transport_error(e, what) from None
            # The stream ended without a final status: one plain look, then reopen.
            current = self.status(swarm_id)
            if current != last:
                last = current
                yield current
            if current.finished:
                return
            time.sleep(0.2)

    def wait(
        self, swarm_id: str, timeout: float = 600.0, raise_on_failure: bool = True
    ) -> SwarmStatus:
        """Block until a swarm finishes and return its final status (as :meth:`status`).

        Parameters
        ----------
        swarm_id
            The swarm to wait for.
        timeout
            Most seconds to wait.
        raise_on_failure
            Raise :class:`~shoal.SwarmFailedError` if the swarm failed (the default).
            ``False`` returns the failed status.

        Raises
        ------
        SwarmFailedError
            If the swarm failed (and ``raise_on_failure``): every failure's task, node
            and traceback; ``.result`` is the final :class:`~shoal.SwarmStatus`.
        ShoalError
            ``client.timeout``, naming the swarm and its last status, if it has not
            finished within ``timeout`` seconds.
        """
        last: SwarmStatus | None = None
        for status in self.watch(swarm_id, timeout=timeout):
            last = status
        final = last if last is not None else self.status(swarm_id)
        if raise_on_failure and final.status == "failed":
            raise SwarmFailedError(
                f"{final.name} ({swarm_id})", final.reason, final.failures, final
            )
        return final

    def stop(self, swarm_id: str) -> None:
        """Ask the coordinator to stop a swarm: running instances are cancelled and its
        status becomes ``"stopped"``."""
        self._json("POST", f"/v1/swarms/{path_part(swarm_id)}/stop", f"stopping swarm {swarm_id}")

    # ------------------------------------------------------------------ logs, metrics

    def logs(
        self,
        swarm_id: str,
        node: str | None = None,
        task: str | None = None,
        level: str | None = None,
        iteration: int | None = None,
        after: int = 0,
        wait: float = 0,
    ) -> list[LogRecord]:
        """A swarm's log records, oldest first.

        Parameters
        ----------
        swarm_id
            The swarm.
        node, task, level, iteration
            Only records of this node id, task alias, level and iteration.
        after
            Only records whose ``seq`` is greater (for paging and following).
        wait
            Seconds to long-poll for new records when there are none yet (at most 60).

        Returns
        -------
        list of LogRecord
            ``seq``, ``node_id``, ``alias``, ``iteration``, ``instance_id``, ``level``,
            ``message``, ``time``.
        """
        params = {
            "node": node,
            "task": task,
            "level": level,
            "iteration": iteration,
            "after": after,
            "wait": wait,
        }
        what = f"logs of swarm {swarm_id}"
        doc = self._json(
            "GET",
            f"/v1/swarms/{path_part(swarm_id)}/logs",
            what,
            params=params,
            wait=float(wait),
        )
        return self._typed(schemas.LOG_LIST, doc, what)

    def follow_logs(
        self,
        swarm_id: str,
        node: str | None = None,
        task: str | None = None,
        level: str | None = None,
        iteration: int | None = None,
        after: int = 0,
        poll: float = 5.0,
    ) -> Iterator[LogRecord]:
        """Yield a swarm's log records as they arrive; end once the swarm has finished
        and every record has been yielded.

        Parameters
        ----------
        swarm_id, node, task, level, iteration, after
            As in :meth:`logs`.
        poll
            Seconds each long-poll waits for new records (also the most time between the
            swarm finishing and the iterator ending).
        """
        checked = 0.0
        while True:
            records = self.logs(swarm_id, node, task, level, iteration, after=after, wait=poll)
            for r in records:
                after = max(after, r.seq)
                yield r
            if records and time.monotonic() - checked < 1.0:
                continue
            checked = time.monotonic()
            if self.status(swarm_id).finished:
                # Records written before the swarm finished are all visible now.
                for r in self.logs(swarm_id, node, task, level, iteration, after=after):
                    yield r
                return

    def metrics(
        self,
        swarm_id: str,
        name: str | None = None,
        node: str | None = None,
        task: str | None = None,
        *,
        frame: bool | None = None,
    ) -> Any:
        """A swarm's metric values, filtered by metric name, node id and task alias.

        Parameters
        ----------
        swarm_id
            The swarm.
        name, node, task
            Only values of this metric name, node id and task alias.
        frame
            None (default): a pandas DataFrame when pandas is installed, else a list of
            records. True: always a DataFrame (``metrics.pandas`` if pandas is
            missing). False: always the list of :class:`~shoal.MetricRecord` (``name``,
            ``value``, ``step``, ``node_id``, ``alias``, ``iteration``, ``time``).

        Returns
        -------
        pandas.DataFrame or list of MetricRecord
            The DataFrame is tidy: one row per value, columns ``swarm`` (the swarm
            id), ``iteration``, ``node``, ``task``, ``name``, ``value``, ``step``,
            ``time``.
        """
        what = f"metrics of swarm {swarm_id}"
        doc = self._json(
            "GET",
            f"/v1/swarms/{path_part(swarm_id)}/metrics",
            what,
            params={"name": name, "node": node, "task": task},
        )
        records: list[MetricRecord] = self._typed(schemas.METRIC_LIST, doc, what)
        return frame_or_records(records, swarm_id, frame)

    # ------------------------------------------------------------------ values

    def result_records(
        self,
        swarm_id: str,
        tag: str,
        alias: str | None = None,
        iteration: int | None = None,
    ) -> list[ResultRecord]:
        """Results stored under ``tag``, as records.

        Parameters
        ----------
        swarm_id
            The swarm.
        tag
            The tag the tasks passed to ``world.results.add(tag, value)``.
        alias
            Only results of this task.
        iteration
            This iteration (default: the last started one).

        Returns
        -------
        list of shoal.runtime.ResultRecord
            ``alias``, ``node_id``, ``iteration`` and the decoded ``value``. Arrays are
            read-only views (call ``.copy()`` to change them).
        """
        rows = self._msgpack(
            f"/v1/swarms/{path_part(swarm_id)}/results/{path_part(tag)}",
            f"results {tag!r} of swarm {swarm_id}",
            params={"alias": alias, "iteration": iteration},
        )
        return [
            ResultRecord(
                str(row["alias"]),
                str(row["node_id"]),
                int(row["iteration"]),
                self._from_wire(row["value"]),
            )
            for row in rows
        ]

    def results(
        self,
        swarm_id: str,
        tag: str,
        alias: str | None = None,
        iteration: int | None = None,
    ) -> dict[str, Any]:
        """Results stored under ``tag``, by node: ``{node_id: value}``.

        Parameters are as in :meth:`result_records`.

        Raises
        ------
        ShoalError
            ``client.result_collision`` if two tasks stored ``tag`` on one node (pass
            ``alias=``, or use :meth:`result_records`).
        """
        out: dict[str, Any] = {}
        seen: dict[str, str] = {}
        for r in self.result_records(swarm_id, tag, alias, iteration):
            node = r.node_id
            if node in seen:
                raise ShoalError(
                    f"results {tag!r} of swarm {swarm_id}: node {node} has one from task "
                    f"{seen[node]!r} and one from task {r.alias!r}",
                    code="client.result_collision",
                    hint="pass alias= to choose the task, or use result_records()",
                )
            seen[node] = r.alias
            out[node] = r.value
        return out

    def get_global(self, swarm_id: str, key: str) -> Any:
        """The current value of one of a swarm's globals (``world.globals[key]``).

        Raises
        ------
        ShoalError
            The coordinator's 404 if the swarm has no such global.
        """
        answer = self._msgpack(
            f"/v1/swarms/{path_part(swarm_id)}/globals/{path_part(key)}",
            f"global {key!r} of swarm {swarm_id}",
        )
        return self._from_wire(answer["value"])

    def nodes(self) -> list[NodeRecord]:
        """Every node the coordinator knows (``node_id``, ``connected``, ``datasets``,
        ``gpu``, ``images``, ``last_seen``, ``running``)."""
        what = "listing nodes"
        return self._typed(schemas.NODE_LIST, self._json("GET", "/v1/nodes", what), what)

    def _from_wire(self, wire: Any) -> Any:
        if isinstance(wire, dict) and "inline" in wire:
            return decode(wire["inline"])
        if isinstance(wire, dict) and "blob" in wire:
            return decode(self._fetch_blob(str(wire["blob"]), int(wire.get("length", -1))))
        raise ShoalError(
            f"the coordinator at {self.url} sent a value of an unknown form: "
            f"{sorted(wire) if isinstance(wire, dict) else type(wire).__name__}",
            code="client.protocol",
            hint="use a client of the coordinator's version",
        )

    def _fetch_blob(self, digest: str, length: int) -> bytes | memoryview:
        """Stream a blob into an anonymous temporary file, check its digest, map it."""
        what = f"fetching blob {digest}"
        hasher = hashlib.sha256()
        with tempfile.TemporaryFile() as f:
            try:
                with self._http.stream("GET", f"/v1/blobs/{path_part(digest)}") as r:
                    if not r.is_success:
                        r.read()
                        raise_for_status(r, what)
                    for chunk in r.iter_bytes(_CHUNK):
                        hasher.update(chunk)
                        f.write(chunk)
            except httpx.HTTPError as e:
                raise self._transport_error(e, what) from None
            size = f.tell()
            if hasher.hexdigest() != digest.removeprefix("sha256:") or (
                length >= 0 and size != length
            ):
                raise ShoalError(
                    f"{what}: the {size} bytes received do not match the digest",
                    code="client.blob",
                    hint="retry; if it persists the coordinator's blob store is damaged",
                )
            f.seek(0)
            if size < _BLOB_IN_MEMORY:
                return f.read()
            # The mapping outlives the file; decoded arrays view it (zero-copy).
            return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


# ---------------------------------------------------------------------- helpers
