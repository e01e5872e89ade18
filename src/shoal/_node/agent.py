"""The node agent: enrols, heartbeats, long-polls instructions and runs instances.

One long-running process per site. Its identity is the credential in
``<state_dir>/credential`` (mode 0600), issued at the first enrolment and reused on
every restart. The coordinator being away never stops it: every call retries with a
capped backoff, and the long-poll loop simply resumes. The coordinator refusing its
identity does (the operator revoked the node, or its id was given to another agent):
the agent stops with the coordinator's reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

from shoal._api.schemas import CancelInstruction, HeartbeatBody, Instruction
from shoal._errors import ShoalError
from shoal._exec.base import Executor
from shoal._exec.registry import make_executor
from shoal._exec.requirements import OverlayBuilder, RequirementChecker
from shoal._node.cache import Caches
from shoal._node.client import Backoff, CoordinatorClient, Rejected, Stopped
from shoal._node.config import DEFAULT_IMAGE, NodeConfig, load_config
from shoal._node.facts import (
    Gpu,
    LinkStats,
    cpu_count,
    detect_gpus,
    gpu_devices,
    memory_total,
)
from shoal._node.identity import CredentialFile, new_credential
from shoal._node.instance import InstanceRun
from shoal._node.proxy import WorldProxy
from shoal._node.warm import WarmPool
from shoal._privacy.ledger import LEDGER_FILE, Budget, Ledger

log = logging.getLogger("shoal.node")

POLL_WAIT_S = 25.0
_REMEMBER = 100_000  # finished instance ids kept to ignore repeated run instructions
_SOCKET_DIR_MAX = 100 - len("/0123456789abcdef0123.sock")
_SHOAL_ROOT = str(Path(__file__).resolve().parents[2])


class Agent:
    """A node agent for one config.

    Parameters
    ----------
    config
        The validated node config.
    executor
        Overrides the executor named in the config (tests).
    """

    def __init__(self, config: NodeConfig, executor: Executor | None = None) -> None:
        self.config = config
        self.stop_event = threading.Event()
        verify: bool | ssl.SSLContext = True
        if config.ca_cert is not None:  # trust a self-signed coordinator CA
            verify = ssl.create_default_context(cafile=str(config.ca_cert))
        self.client = CoordinatorClient(
            config.coordinator, self.stop_event, config.retry_max_s, verify
        )
        self.client.on_unauthorized = self._reenrol
        # Private to the agent's user, also when an older agent made it 0755.
        config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        config.state_dir.chmod(0o700)
        self.executor = executor or make_executor(config.executor)
        # An executor that runs tasks as another user must be able to read their values.
        shared = bool(getattr(self.executor, "tasks_as_other_user", False))
        self.caches = Caches(config.state_dir / "cache", self.client, shared=shared)
        self.gpus = _gpus(config.gpu)
        self.link = LinkStats()  # heartbeats' round trips: local.get_network_quality()
        budgets = {k: Budget(b.epsilon, b.delta) for k, b in config.privacy.items()}
        ledger = Ledger(budgets, config.state_dir / LEDGER_FILE, owner=f"node {config.node_id!r}")
        self.proxy = WorldProxy(
            self.client,
            self.caches,
            self.gpus,
            self.link,
            ledger=ledger,
            secret_key=_secret_key(config.state_dir),
        )
        self.requirements = RequirementChecker()
        # Installing what an image lacks only where the node's owner allows it.
        self.overlays = (
            OverlayBuilder(config.state_dir / "envs", config.package_index)
            if config.install_requirements and config.package_index
            else None
        )
        # The device files a GPU task is shown (none on a node without a GPU).
        self.gpu_devices = tuple(gpu_devices()) if self.gpus else ()
        self.slots = threading.Semaphore(config.limits.max_concurrent)
        # Task processes kept for the next instance of the same module of the same swarm.
        self.warm = WarmPool(config.warm, self.stop_event) if config.warm.enabled else None
        # What a previous agent process left (it was killed): its instances are gone.
        for leftover in ("work", "run"):
            shutil.rmtree(config.state_dir / leftover, ignore_errors=True)
        (config.state_dir / "work").mkdir(mode=0o700)
        self.socket_dir = config.state_dir / "run"
        if len(str(self.socket_dir)) <= _SOCKET_DIR_MAX:
            self.socket_dir.mkdir(mode=0o700)
        else:  # Unix socket paths are limited to ~100 bytes
            self.socket_dir = Path(tempfile.mkdtemp(prefix="shoal-node-"))
        self.session = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._running: dict[str, InstanceRun] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._enrol_lock = threading.Lock()
        self.identity = CredentialFile(config.state_dir)
        self.fatal: ShoalError | None = None  # why the coordinator refused this node
        self._images = self._check_images()

    # ------------------------------------------------------------------ images
    def _check_images(self) -> dict[str, tuple[Path, str | None]]:
        """Images whose interpreter can run the task runner, with the PYTHONPATH each
        needs (the agent's own shoal, when the interpreter does not have it). An
        executor with ``check_image(name, value) -> (interpreter, pythonpath) | reason``
        (podman, docker) checks each image itself; an unusable one is logged, not
        offered."""
        names = {DEFAULT_IMAGE, *self.config.images}
        usable: dict[str, tuple[Path, str | None]] = {}
        # An executor that resolves images itself (OCI: image references) checks them.
        check = getattr(self.executor, "check_image", None)
        for name in sorted(names):
            if check is not None:
                value = self.config.images.get(name)
                try:
                    got = check(name, None if value is None else str(value))
                except Exception as e:  # an unusable image is never the agent's end
                    got = f"checking it failed: {e}"
                if isinstance(got, str):
                    (log.info if value is None else log.error)(
                        "image %r is not offered: %s", name, got
                    )
                else:
                    usable[name] = got
                continue
            interp = self.config.interpreter(name)
            if interp is None:
                continue
            # The agent's own shoal first: the task side must speak the agent's table of
            # world operations (another shoal installed in that environment may be older).
            for pythonpath in (_SHOAL_ROOT, None):
                if _imports_shoal(interp, pythonpath):
                    usable[name] = (interp, pythonpath)
                    break
            else:
                log.error(
                    "image %r (%s) cannot import shoal: it is not offered; install shoal "
                    "into that environment",
                    name,
                    interp,
                )
        return usable

    def image_path(self, image: str) -> tuple[Path, str | None] | None:
        """The interpreter of an image and the PYTHONPATH it needs, or None."""
        return self._images.get(image)

    def offer(self) -> dict[str, Any]:
        """What this node offers: datasets, gpu, images, and its facts (the CPUs and
        memory one instance may use, the GPUs detected) for placement."""
        limits = self.config.limits
        cpu = float(cpu_count()) if limits.cpus is None else min(cpu_count(), limits.cpus)
        memory = memory_total()
        if limits.memory_mb is not None:
            memory = min(memory, limits.memory_mb * 2**20) if memory else limits.memory_mb * 2**20
        return {
            "datasets": sorted(self.config.datasets),
            "gpu": bool(self.gpus),
            "images": sorted(self._images),
            "facts": {
                "cpu": cpu,
                "memory": memory or None,
                "gpus": [{"name": g.name, "memory": g.memory} for g in self.gpus],
            },
        }

    # --------------------------------------------------------------- identity
    def _load_or_enrol(self) -> None:
        with self.identity.locked():
            self.client.credential = self.identity.read()
            if self.client.credential is None:
                self._enrol()

    def _enrol(self) -> None:
        token = self.config.read_join_token()
        if token is None:
            raise ShoalError(
                f"node {self.config.node_id!r} has no credential and no join token",
                code="node.enrol",
                hint="set join_token or join_token_file in the node config "
                "(`shoal coordinator token` prints it)",
            )
        self.client.credential = None
        # Chosen here and kept before it is sent: an enrolment whose answer is lost is
        # repeated with it (also by the next agent process) and answered the same.
        proposed = self.identity.read_next() or new_credential(self.config.node_id)
        self.identity.write_next(proposed)
        credential = self.client.enrol(token, self.config.node_id, self.offer(), proposed)
        self.identity.write(credential)
        self.client.credential = credential
        log.info("enrolled node %s", self.config.node_id)

    def _reenrol(self, rejected: str | None) -> None:
        """The coordinator no longer accepts our credential: use the one on disk if a
        rotation replaced it, else enrol again (which works when the coordinator does
        not know this node id, e.g. its database was reset). A refusal of the identity
        itself (revoked, enrolled by another agent) stops the agent."""
        with self._enrol_lock:
            if self.client.credential != rejected:
                return  # another thread enrolled again meanwhile
            with self.identity.locked():
                on_disk = self.identity.read()
                if on_disk is not None and on_disk != rejected:
                    log.info("using the node's new credential from %s", self.identity.path)
                    self.client.credential = on_disk
                    return
                log.warning("the coordinator rejected this node's credential; enrolling again")
                try:
                    self._enrol()
                except Rejected as e:
                    if e.status in (401, 403):
                        self._stop_refused(e)
                    raise

    def _stop_refused(self, e: Rejected) -> None:
        log.error("the coordinator refused this node's identity; stopping: %s", e)
        self.fatal = e
        self.stop_event.set()

    # ------------------------------------------------------------------- loops
    def _heartbeat_body(self) -> HeartbeatBody:
        with self._lock:
            running = sorted(self._running)
        return HeartbeatBody(**self.offer(), session=self.session, running=running)

    def _heartbeats(self) -> None:
        while not self.stop_event.wait(self.config.heartbeat_interval_s):
            body = self._heartbeat_body()
            start = time.monotonic()
            try:
                self.client.heartbeat(body)
            except Stopped:
                return
            except Exception as e:  # the next beat is the retry
                self.link.record(None)
                log.debug("heartbeat failed: %s", e)
            else:
                self.link.record(time.monotonic() - start)

    def _poll(self) -> None:
        backoff = Backoff(self.stop_event, self.config.retry_max_s)
        after = 0  # the last instruction received: acknowledged by the next poll
        while not self.stop_event.is_set():
            try:
                items, after = self.client.instructions(POLL_WAIT_S, after)
            except Stopped:
                return
            except Rejected as e:
                log.error("instructions refused: %s", e)
                backoff.pause()
                continue
            backoff.reset()
            for item in items:
                self._instruction(item)

    def _poll_safely(self) -> None:
        try:
            self._poll()
        except Exception:
            if not self.stop_event.is_set():
                log.exception("the instruction loop failed; stopping the agent")
            self.stop_event.set()

    def _instruction(self, item: Instruction) -> None:
        iid = item.instance_id
        with self._lock:
            if isinstance(item, CancelInstruction):
                run = self._running.get(iid)
                if run is not None:
                    run.cancel(item.reason)
                return
            if iid in self._running or iid in self._finished:
                return  # offered again after a coordinator restart: already ours
            run = InstanceRun(self, item)
            self._running[iid] = run
            thread = threading.Thread(target=run.run, name=f"instance {iid}", daemon=True)
            self._threads[iid] = thread
        log.info("running %s", iid)
        thread.start()

    def finished(self, instance_id: str) -> None:
        """Forget a running instance, remembering that it ran."""
        with self._lock:
            self._running.pop(instance_id, None)
            self._threads.pop(instance_id, None)
            self._finished[instance_id] = None
            while len(self._finished) > _REMEMBER:
                self._finished.popitem(last=False)

    # --------------------------------------------------------------- lifecycle
    def serve(self) -> None:
        """Run until :meth:`stop` is called (from a signal handler or another thread)."""
        beat: threading.Thread | None = None
        try:
            self._load_or_enrol()
            # The first heartbeat carries the new session before any instruction is
            # taken, so the coordinator knows this agent lost its old instances.
            start = time.monotonic()
            self.client.call(
                "POST", "/v1/nodes/heartbeat", json=self._heartbeat_body().model_dump()
            )
            self.link.record(time.monotonic() - start)
            beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
            beat.start()
            # The long poll blocks for up to POLL_WAIT_S; it runs in its own thread so a
            # stop request is served at once.
            poll = threading.Thread(target=self._poll_safely, name="poll", daemon=True)
            poll.start()
            self.stop_event.wait()
        except Stopped:
            pass
        finally:
            self.stop_event.set()
            self._shutdown(beat)
        if self.fatal is not None:
            raise self.fatal

    def stop(self) -> None:
        """Ask the agent to stop; running instances are killed."""
        self.stop_event.set()

    def _shutdown(self, beat: threading.Thread | None) -> None:
        with self._lock:
            runs = list(self._running.values())
            threads = list(self._threads.values())
        for run in runs:
            run.cancel("the node agent is stopping")
        for t in threads:
            t.join(timeout=15)
        if self.warm is not None:
            self.warm.close()
        if beat is not None:
            beat.join(timeout=5)
        self.client.close()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def _gpus(configured: bool | None) -> list[Gpu]:
    """The GPUs this node offers (see ``NodeConfig.gpu``)."""
    if configured is False:
        return []
    found = detect_gpus()
    if found:
        log.info("GPUs detected: %s", ", ".join(g.name for g in found))
    elif configured:
        log.warning(
            "gpu = true but nvidia-smi finds no GPU: offering one GPU of unknown memory; "
            "check the driver, or set gpu = false"
        )
        found = [Gpu("declared in the node config", None)]
    return found


def _imports_shoal(interp: Path, pythonpath: str | None) -> bool:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    try:
        proc = subprocess.run(
            [str(interp), "-c", "import shoal._node.task_runner"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def run(config_path: Path | str) -> None:
    """Run a node agent from its TOML config until SIGINT / SIGTERM.

    Parameters
    ----------
    config_path
        The node's TOML file (see :mod:`shoal._node.config`).

    Raises
    ------
    ShoalError
        ``node.config`` for an invalid config, ``node.enrol`` if the node has neither a
        credential nor a join token, the coordinator's ``auth.*`` refusal when it does
        not accept the node's identity (a join token that does not work, a node id
        enrolled by another agent, a node the operator revoked).
    """
    if not logging.getLogger().handlers:  # the CLI configures none; say what happens
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    agent = Agent(load_config(config_path))
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: agent.stop())
    with contextlib.suppress(KeyboardInterrupt):
        agent.serve()


def _secret_key(state_dir: Path) -> bytes:
    """The node's key for ``local.secret`` (``state_dir/secret-key``, mode 0600), made
    once: tasks' secrets stay the same across agent restarts and never leave the node."""
    path = state_dir / "secret-key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()
