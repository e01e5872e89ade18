"""The node's identity on disk: its credential in ``<state_dir>/credential`` (mode 0600),
and its rotation.

The agent and ``shoal node rotate-credential`` may run at once on one state folder; they
take turns on ``<state_dir>/credential.lock`` (an advisory lock), so the agent that
finds its credential refused reads the file only after a rotation has written it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from shoal._errors import ShoalError
from shoal._node.client import CoordinatorClient, abandon_when
from shoal._node.config import load_config

log = logging.getLogger("shoal.node")

LOCK_TIMEOUT_S = 60.0
_LOCK_POLL_S = 0.05


class CredentialFile:
    """A node's credential file in its state folder.

    Parameters
    ----------
    state_dir
        The node's state folder (``state_dir`` of its config).
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "credential"
        self.next_path = state_dir / "credential.next"
        self._lock_path = state_dir / "credential.lock"

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def read(self) -> str | None:
        """The credential, or None if the node has none."""
        return self._read(self.path)

    def read_next(self) -> str | None:
        """The credential of a rotation that was interrupted, or None."""
        return self._read(self.next_path)

    @staticmethod
    def _write(path: Path, credential: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(credential + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def write(self, credential: str) -> None:
        """Replace the credential atomically (mode 0600) and forget a pending rotation."""
        self._write(self.path, credential)
        self.next_path.unlink(missing_ok=True)

    def write_next(self, credential: str) -> None:
        """Keep the credential a rotation is about to install (mode 0600)."""
        self._write(self.next_path, credential)

    @contextlib.contextmanager
    def locked(self, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the state folder's credential lock (waiting at most ``timeout_s``).

        Raises
        ------
        ShoalError
            ``node.credential_lock`` if another process held it all that time.
        """
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ShoalError(
                            f"{self._lock_path} stayed locked for {timeout_s:g}s",
                            code="node.credential_lock",
                            hint="another agent or rotation uses this state folder; "
                            "wait for it, or stop it",
                        ) from None
                    time.sleep(_LOCK_POLL_S)
            yield
        finally:
            os.close(fd)  # releases the lock


def new_credential(node_id: str) -> str:
    """A fresh credential for ``node_id`` (``<node_id>:<secret>``)."""
    return f"{node_id}:{secrets.token_urlsafe(32)}"


def rotate_credential(config_path: Path | str, timeout_s: float = 60.0) -> str:
    """Give the node of a config a new credential (``shoal node rotate-credential``).

    Works whether its agent runs or not: the running agent reads the new credential
    from the file when the coordinator refuses the old one. The new credential is
    written to ``credential.next`` before it is sent; a rotation cut off midway is
    completed by running this again.

    Parameters
    ----------
    config_path
        The node's TOML config.
    timeout_s
        How long to keep trying to reach the coordinator.

    Returns
    -------
    str
        The node id.

    Raises
    ------
    ShoalError
        ``node.enrol`` if the node has no credential yet, ``node.abandoned`` if the
        coordinator could not be reached in time, the coordinator's refusal otherwise.
    """
    config = load_config(config_path)
    identity = CredentialFile(config.state_dir)
    verify: bool | ssl.SSLContext = True
    if config.ca_cert is not None:
        verify = ssl.create_default_context(cafile=str(config.ca_cert))
    client = CoordinatorClient(config.coordinator, threading.Event(), config.retry_max_s, verify)
    deadline = time.monotonic() + timeout_s
    try:
        if not identity.path.exists():
            raise ShoalError(
                f"node {config.node_id!r} has no credential in {identity.path}",
                code="node.enrol",
                hint="start the agent once so that it enrols (`shoal node start`)",
            )
        with identity.locked():
            current = identity.read()
            if current is None:
                raise ShoalError(
                    f"node {config.node_id!r} has no credential in {identity.path}",
                    code="node.enrol",
                    hint="start the agent once so that it enrols (`shoal node start`)",
                )
            new = identity.read_next() or new_credential(config.node_id)
            identity.write_next(new)
            client.credential = current
            late = f"the coordinator did not answer within {timeout_s:g}s"
            with abandon_when(lambda: late if time.monotonic() > deadline else None):
                client.rotate_credential(new)
            identity.write(new)
    finally:
        client.close()
    log.info("node %s has a new credential", config.node_id)
    return config.node_id
