"""The external-process script's channel to its task: codec frames on a socket.

The task makes a socket pair, passes one end's fd to the child (``SHOAL_JOB_CHANNEL``)
and sends the round's model; the child's Client API sends its result back. Frames are
a 4-byte length then shoal's codec (never pickle), so tensors and arrays travel as the
codec's extension types.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from shoal._codec import decode, encode
from shoal._errors import ShoalError
from shoal._job.client import FLModel, Session

_MAX = 1 << 31


def _model_to_data(m: FLModel) -> dict[str, Any]:
    return {
        "params": m.params,
        "params_type": str(getattr(m.params_type, "value", m.params_type)),
        "metrics": m.metrics,
        "meta": m.meta,
        "current_round": m.current_round,
        "total_rounds": m.total_rounds,
    }


def _model_from_data(d: dict[str, Any]) -> FLModel:
    return FLModel(
        params=d["params"],
        params_type=d["params_type"],
        metrics=d["metrics"],
        meta=d["meta"] or {},
        current_round=d["current_round"],
        total_rounds=d["total_rounds"],
    )


class Channel:
    """One end of the socket pair between a task and its script's process."""

    def __init__(self, fd: int | socket.socket, timeout: float | None = 3600.0) -> None:
        self.sock = fd if isinstance(fd, socket.socket) else socket.socket(fileno=fd)
        self.sock.settimeout(timeout)  # bounded: a script that never answers fails

    def _write(self, value: Any) -> None:
        data = encode(value)
        self.sock.sendall(struct.pack(">I", len(data)) + data)

    def _read(self) -> Any:
        head = self._exact(4)
        (n,) = struct.unpack(">I", head)
        if n >= _MAX:
            raise ShoalError(f"job channel frame of {n} bytes", code="channel.frame")
        return decode(self._exact(n))

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ShoalError("the script's channel closed mid-frame", code="channel.closed")
            buf += chunk
        return bytes(buf)

    # task side
    def send_round(self, session: Session) -> None:
        """Give the script its round (site, job, task name, model)."""
        self._write(
            {
                "site": session.site,
                "job_id": session.job_id,
                "task_name": session.task_name,
                "model": _model_to_data(session.model),
            }
        )

    def receive_result(self, session: Session) -> None:
        """Read the script's result and logs into ``session``."""
        d = self._read()
        session.sent = _model_from_data(d["model"])
        session.logs = [tuple(x) for x in d["logs"]]

    # script side
    def receive_session(self) -> Session:
        """The round the task sent."""
        d = self._read()
        return Session(
            site=d["site"],
            job_id=d["job_id"],
            task_name=d["task_name"],
            model=_model_from_data(d["model"]),
            channel=self,
        )

    def send_result(self, session: Session) -> None:
        """Send the script's result (and what it logged) back to the task."""
        assert session.sent is not None
        self._write(
            {"model": _model_to_data(session.sent), "logs": [list(x) for x in session.logs]}
        )
