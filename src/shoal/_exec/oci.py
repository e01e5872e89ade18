"""OCI executors: each instance in a podman or docker container.

A node whose config says ``executor = "podman"`` (or ``"docker"``) maps every image
name to an OCI image reference::

    executor = "podman"

    [images]
    python = "localhost/shoal-task:3.11"

The container runs ``python3 -m shoal._node.task_runner SOCKET`` under the ``SANDBOX``
restrictions of its instance, turned into flags by :func:`container_argv`:

- ``--network none`` (``network=False``), a read-only root, a private ``/tmp``
  (tmpfs), no capabilities, ``no-new-privileges``, and the node's limits: ``memory_mb``
  as the container's memory limit (swap included, so the limit is the limit; no
  address-space rlimit on top), ``max_processes`` as its pids limit (1024 when unset),
  ``cpus`` as ``--cpus``, ``cpu_s`` as the task runner's own CPU-time rlimit, and
  ``wall_s`` enforced by the handle;
- the instance's work dir read-write, its bundle, the blob cache and its datasets
  read-only, and its socket, each at the same path as on the host (the agent hands the
  task host paths);
- only the environment :func:`~shoal._exec.base.task_env` gives (HOME, TMPDIR,
  LANG, ...; never the agent's), and the per-instance token on stdin (``-i``), never in
  argv or the environment;
- a non-root user: the agent's own uid when the agent is not root (``--userns keep-id``
  for rootless podman), else ``nobody`` (the agent hands it the work dir and socket;
  datasets must then be readable by others, as bundles and cached blobs are).

What an image needs: Python >= 3.10 as ``python3`` on its PATH, with shoal's runtime
dependencies (numpy, msgpack). If shoal itself is installed in the image (the same
version as the agent's), it is used; otherwise the agent's own ``shoal`` package is
bind-mounted read-only at ``/opt/shoal-host/shoal`` and put on PYTHONPATH. Only the
package is mounted, never the agent's site-packages: compiled dependencies must match
the image's Python, so they come from the image. :meth:`OciExecutor.check_image` tries
both when the agent starts; an image that can do neither is not offered (the agent logs
why), and a module asking for it cannot be placed on this node.

Images are never pulled while a task starts (``--pull never``): pull or build them on
the node first. Engine-wide settings (the OCI runtime, default ulimits, storage) come
from the engine's own configuration (``containers.conf``, ``daemon.json``).

The container is not started with ``--rm``: when it exits, its handle reads
``.State.OOMKilled`` (so a memory-limit kill is named as such) and then removes it.
Some engine setups never record OOMKilled (podman with runc on a hybrid cgroup v1
host); a SIGKILL under a memory limit that the agent did not send is then reported as
"most likely out of memory".
Containers left by an agent that died are removed by the next agent on the same state
folder when it starts its first instance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shoal._errors import ShoalError
from shoal._exec.base import (
    TASK_RUNNER,
    InstanceSpec,
    ProcessHandle,
    TaskHandle,
    runner_argv,
    spawn_with_token,
    task_env,
)
from shoal._exec.restrictions import Restrictions

log = logging.getLogger("shoal.node")

ENGINES = ("podman", "docker")
CONTAINER_PYTHON = "python3"
HOST_SHOAL_MOUNT = "/opt/shoal-host"  # the agent's shoal package is bound below this
PIDS_LIMIT = 1024  # when the node sets no max_processes
NOBODY = 65534
LABEL = "io.shoal.state"  # value: the agent's state folder (for leftover cleanup)
CLI_TIMEOUT_S = 60.0  # one engine CLI call (inspect, kill, rm)
CHECK_TIMEOUT_S = 120.0  # an image's import check (a cold engine can be slow)
_SIGKILLED = 128 + signal.SIGKILL  # how engine clients report a container's SIGKILL
# The agent's own shoal package (this file is shoal/_exec/oci.py).
_SHOAL_PACKAGE = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ContainerPlan:
    """Everything that decides one container's command line.

    Attributes
    ----------
    engine
        The engine's CLI (``podman``, ``docker`` or a path to one).
    name
        The container's name.
    image
        The OCI image reference.
    argv
        The task runner's command line inside the container (interpreter first).
    env
        The container's whole environment (set explicitly; nothing is inherited).
    workdir
        Bound read-write; the container's working directory.
    limits
        Its restrictions: ``ro_binds`` are bound read-only and ``rw_binds`` (the
        sockets) writable, each at its own path; ``network``, ``memory_mb``,
        ``max_processes`` and ``cpus`` become engine flags (see :func:`container_argv`).
    host_shoal
        The agent's ``shoal`` package to bind read-only at ``/opt/shoal-host/shoal``, or
        None when the image has shoal.
    user
        ``uid:gid`` to run as (None: the image's user).
    keep_id
        Map the agent's uid into the container (rootless podman).
    label
        The value of the ``io.shoal.state`` label (None: no label).
    network
        The container network the instance shares with its swarm's other instances
        on one ``Task(network=...)`` (an internal network: no route off the node), or
        None for ``--network none``.
    """

    engine: str
    name: str
    image: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    workdir: Path
    limits: Restrictions = Restrictions.SANDBOX
    host_shoal: Path | None = None
    user: str | None = None
    keep_id: bool = False
    label: str | None = None
    network: str | None = None


def _volume(src: Path, dst: str | Path, mode: str) -> list[str]:
    """A ``--volume`` flag. Paths holding ``:`` or ``,`` cannot be expressed."""
    for p in (str(src), str(dst)):
        if ":" in p or "," in p:
            raise ShoalError(
                f"cannot bind {p!r} into a container: the path holds ':' or ','",
                code="node.executor",
                hint="rename the folder (state_dir, dataset or cache path) without ':' or ','",
            )
    return ["--volume", f"{src}:{dst}:{mode}"]


def container_argv(plan: ContainerPlan) -> list[str]:
    """The engine command line that runs ``plan`` (the token goes on its stdin).

    Each restriction becomes flags: ``network=False`` -> ``--network none``;
    ``host_files=False`` -> a read-only root of the image, a private ``/tmp`` and only
    the plan's volumes; ``memory_mb`` -> ``--memory`` and ``--memory-swap`` (no swap
    beyond it); ``max_processes`` -> ``--pids-limit`` (1024 when unset); ``cpus`` ->
    ``--cpus``. ``cpu_s`` is the task runner's rlimit (in ``plan.argv``) and
    ``wall_s`` the handle's watchdog.

    Parameters
    ----------
    plan
        The container to run.

    Returns
    -------
    list of str
        ``[engine, "run", ...]``.

    Raises
    ------
    ValueError
        If ``plan.limits.host_files`` is True: a container never shows the host's files.
    ShoalError
        ``node.executor`` if a bound path holds ``:`` or ``,``.
    """
    limits = plan.limits
    if limits.host_files:
        raise ValueError("a container shows only its binds: use host_files=False")
    argv = [plan.engine, "run", "--interactive", "--name", plan.name, "--pull", "never"]
    if not limits.network:
        # A task network is internal (`network create --internal`): it joins the swarm's
        # instances on this node to each other, never to the outside.
        argv += ["--network", plan.network or "none"]
    argv += [
        "--read-only",
        "--tmpfs",
        "/tmp:rw,nosuid,nodev,mode=1777",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--pids-limit",
        str(limits.max_processes or PIDS_LIMIT),
    ]
    if plan.label is not None:
        argv += ["--label", f"{LABEL}={plan.label}"]
    if limits.memory_mb is not None:
        argv += ["--memory", f"{limits.memory_mb}m", "--memory-swap", f"{limits.memory_mb}m"]
    if limits.cpus is not None:
        argv += ["--cpus", f"{limits.cpus:g}"]
    for device in limits.devices:  # a GPU task's /dev/nvidia*
        argv += ["--device", f"{device}:/dev/{Path(device).name}"]
    if plan.keep_id:
        argv += ["--userns", "keep-id"]
    if plan.user is not None:
        argv += ["--user", plan.user]
    argv += _volume(plan.workdir, plan.workdir, "rw")
    for p in limits.ro_binds:
        argv += _volume(p, p, "ro")
    for s in limits.rw_binds:
        argv += _volume(s, s, "rw")
    if plan.host_shoal is not None:
        argv += _volume(plan.host_shoal, f"{HOST_SHOAL_MOUNT}/shoal", "ro")
    argv += ["--workdir", str(plan.workdir)]
    for key, value in sorted(plan.env.items()):
        argv += ["--env", f"{key}={value}"]
    argv += ["--entrypoint", plan.argv[0], plan.image, *plan.argv[1:]]
    return argv


def _user(engine: str) -> tuple[str | None, bool]:
    """The container user and whether to keep the agent's uid (rootless podman)."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        return f"{NOBODY}:{NOBODY}", False
    return f"{uid}:{gid}", Path(engine).name == "podman"


def _engine_env() -> dict[str, str]:
    """The engine CLI's own environment: the agent's (DOCKER_HOST, XDG_RUNTIME_DIR,
    CONTAINERS_CONF ... matter to it). None of it reaches the container: every
    variable the container gets is passed explicitly as ``--env NAME=VALUE``."""
    return dict(os.environ)


def _cli(
    engine: str, *args: str, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [engine, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_engine_env(),
        stdin=subprocess.DEVNULL,
    )


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class ContainerHandle(ProcessHandle):
    """A running container, driven through its engine CLI client.

    ``poll`` / ``wait`` report the client's exit status (the container's). When it has
    exited, the handle reads whether the memory limit killed it, then removes the
    container. ``kill`` kills and removes the container as well as the client (killing
    only the client would leave the container running).
    """

    def __init__(
        self,
        engine: str,
        name: str,
        proc: subprocess.Popen[bytes],
        limits: Restrictions,
    ) -> None:
        self.engine = engine
        self.name = name
        self.oom_killed = False
        self._removed = False  # by a kill: nothing left to inspect
        super().__init__(proc, limits)

    @property
    def memory_mb(self) -> int | None:
        """The container's memory limit (None: none)."""
        return self.limits.memory_mb

    def _kill_more(self) -> None:
        """Kill and remove the container itself."""
        self._removed = True
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            _cli(self.engine, "kill", self.name)
        self._remove()

    def _exited(self) -> None:
        """Read the container's OOM flag, then remove it (unless a kill did)."""
        if self._removed:
            return
        try:
            got = _cli(self.engine, "inspect", "--format", "{{.State.OOMKilled}}", self.name)
            self.oom_killed = got.returncode == 0 and got.stdout.strip().lower() == "true"
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._remove()

    def _remove(self) -> None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            _cli(self.engine, "rm", "--force", self.name)

    def failure_reason(self) -> str | None:
        """Why the container died, when more is known than its exit status."""
        limit = f" of {self.memory_mb} MB" if self.memory_mb is not None else ""
        if self.oom_killed:
            return f"out of memory: the container's memory limit{limit} killed it (OOMKilled)"
        if (why := super().failure_reason()) is not None:
            return why
        unasked = not self.killed and not self.expired
        if self.memory_mb is not None and unasked and self.proc.returncode == _SIGKILLED:
            # Some engine setups (cgroup v1 hybrids) do not record OOMKilled; nothing but
            # the kernel's OOM killer sends SIGKILL into the container unasked.
            return (
                f"the container was killed (SIGKILL) under a memory limit{limit}: most likely "
                "out of memory (the engine did not record an OOM kill)"
            )
        return None


@dataclass(frozen=True)
class OciImage:
    """An image checked usable.

    Attributes
    ----------
    ref
        Its OCI reference.
    pythonpath
        None when the image has shoal; else the PYTHONPATH under which the agent's
        shoal package is bound.
    """

    ref: str
    pythonpath: str | None


def network_create_argv(name: str, label: str | None = None) -> list[str]:
    """The engine arguments that create a task network: internal (no route off the
    node), labelled like the agent's containers."""
    argv = ["network", "create", "--internal"]
    if label is not None:
        argv += ["--label", f"{LABEL}={label}"]
    return [*argv, name]


def plan_container(
    engine: str, spec: InstanceSpec, socket_path: Path, image: OciImage
) -> ContainerPlan:
    """The container that runs one instance.

    Parameters
    ----------
    engine
        The engine's CLI.
    spec
        The instance (its ``SANDBOX`` restrictions: see
        :meth:`~shoal._exec.base.InstanceSpec.restrictions`).
    socket_path
        The agent's socket for it (bound into the container at the same path).
    image
        Its checked image.

    Returns
    -------
    ContainerPlan
        Pass it to :func:`container_argv`.
    """
    env = task_env(spec)
    env.pop("PATH", None)  # the image's own PATH finds its python3
    env.pop("PYTHONPATH", None)  # the agent's paths mean nothing inside the image
    if image.pythonpath is not None:
        env["PYTHONPATH"] = image.pythonpath
    limits = spec.restrictions(OciExecutor.preset, sockets=[socket_path])
    limits = dataclasses.replace(
        limits, ro_binds=tuple(dict.fromkeys(p.resolve() for p in limits.ro_binds))
    )
    # Memory: the container's limit, not RLIMIT_AS.
    argv = runner_argv(CONTAINER_PYTHON, socket_path, dataclasses.replace(limits, memory_mb=None))
    user, keep_id = _user(engine)
    key = hashlib.sha256(spec.instance_id.encode()).hexdigest()[:16]
    return ContainerPlan(
        engine=engine,
        name=f"shoal-{key}-{uuid.uuid4().hex[:8]}",
        image=image.ref,
        argv=tuple(argv),
        env=env,
        workdir=spec.workdir,
        limits=limits,
        host_shoal=_SHOAL_PACKAGE if image.pythonpath is not None else None,
        user=user,
        keep_id=keep_id,
        label=str(_state_dir(spec)),
        network=spec.network,
    )


class OciExecutor:
    """Runs each instance in a container of its module's image (podman or docker).

    Parameters
    ----------
    engine
        ``"podman"`` or ``"docker"``, or the path of such a CLI.

    Raises
    ------
    ShoalError
        ``node.executor`` if the engine's CLI is not installed or cannot reach its
        engine (``<engine> info`` fails).
    """

    preset = Restrictions.SANDBOX
    enforces: frozenset[str] = frozenset(
        {"network", "host_files", "memory_mb", "max_processes", "cpus", "cpu_s", "wall_s"}
    )
    #: Instances of one swarm on one ``Task(network=...)`` share a container network.
    shares_networks = True

    def __init__(self, engine: str) -> None:
        found = shutil.which(engine)
        self.name = Path(engine).name
        if found is None:
            raise ShoalError(
                f"executor {self.name!r}: {engine!r} is not installed",
                code="node.executor",
                hint=f"install {self.name} (e.g. apt-get install {self.name}), or set "
                'executor = "bwrap" in the node config',
            )
        self.engine = found
        try:
            info = _cli(found, "info", timeout=CHECK_TIMEOUT_S)
            problem = "" if info.returncode == 0 else _first_line(info.stderr or info.stdout)
        except (OSError, subprocess.TimeoutExpired) as e:
            problem = str(e)
        if problem:
            raise ShoalError(
                f"executor {self.name!r}: `{self.name} info` fails: {problem}",
                code="node.executor",
                hint=f"start the {self.name} engine (or fix its configuration), or set "
                'executor = "bwrap" in the node config',
            )
        self._images: dict[str, OciImage] = {}
        self._pruned: set[str] = set()
        self._networks: set[str] = set()  # task networks created (or found) here
        self._lock = threading.Lock()

    @property
    def tasks_as_other_user(self) -> bool:
        """Whether tasks run as a user other than the agent's (``nobody`` when the agent
        is root): the agent then leaves the values it hands them readable by others."""
        return os.getuid() == 0

    # ------------------------------------------------------------------ images
    def _runs_shoal(self, ref: str, host_shoal: bool) -> tuple[bool, str]:
        argv = [
            self.engine,
            "run",
            "--rm",
            "--pull",
            "never",
            "--network",
            "none",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
        ]
        if host_shoal:
            argv += _volume(_SHOAL_PACKAGE, f"{HOST_SHOAL_MOUNT}/shoal", "ro")
            argv += ["--env", f"PYTHONPATH={HOST_SHOAL_MOUNT}"]
        argv += ["--entrypoint", CONTAINER_PYTHON, ref, "-c", f"import {TASK_RUNNER}"]
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=CHECK_TIMEOUT_S,
                check=False,
                env=_engine_env(),
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return False, str(e)
        return proc.returncode == 0, _first_line(proc.stderr or proc.stdout)

    def check_image(self, name: str, value: str | None) -> tuple[Path, str | None] | str:
        """Whether image ``name`` (OCI reference ``value``) can run the task runner.

        Parameters
        ----------
        name
            The image name modules ask for.
        value
            Its OCI image reference from the node config (None: not configured).

        Returns
        -------
        tuple of (Path, str or None), or str
            The interpreter and PYTHONPATH inside the container, or why the image is
            not usable (the agent logs it and does not offer the image).
        """
        if value is None:
            return (
                f"no OCI image is configured for {name!r} (with executor {self.name!r} "
                f'every image needs one: [images] {name} = "REFERENCE")'
            )
        try:
            got = _cli(self.engine, "image", "inspect", value)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"`{self.name} image inspect {value}` failed: {e}"
        if got.returncode != 0:
            return (
                f"{self.name} has no local image {value!r} (pull or build it on this node: "
                f"`{self.name} pull {value}`; images are never pulled when a task starts)"
            )
        ok, why = self._runs_shoal(value, host_shoal=False)
        pythonpath: str | None = None
        if not ok:
            ok, why = self._runs_shoal(value, host_shoal=True)
            pythonpath = HOST_SHOAL_MOUNT
        if not ok:
            return (
                f"image {value!r} cannot run shoal's task runner ({why}); it needs "
                f"{CONTAINER_PYTHON} >= 3.10 with numpy and msgpack (and ideally shoal)"
            )
        with self._lock:
            self._images[name] = OciImage(value, pythonpath)
        return Path(CONTAINER_PYTHON), pythonpath

    # ------------------------------------------------------------------- start
    def _prune(self, state_dir: Path) -> None:
        """Remove containers left by an agent on the same state folder that died."""
        key = str(state_dir)
        with self._lock:
            if key in self._pruned:
                return
            self._pruned.add(key)
        try:
            got = _cli(
                self.engine,
                "ps",
                "--all",
                "--quiet",
                "--filter",
                f"label={LABEL}={key}",
                "--filter",
                "status=exited",
            )
        except (OSError, subprocess.TimeoutExpired):
            return
        ids = got.stdout.split()
        if got.returncode == 0 and ids:
            log.info("removing %d container(s) left by a previous agent", len(ids))
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                _cli(self.engine, "rm", "--force", *ids)

    def plan(self, spec: InstanceSpec, socket_path: Path) -> ContainerPlan:
        """The container of one instance (see :func:`plan_container`).

        Raises
        ------
        ShoalError
            ``node.image`` if the instance's image was not checked usable.
        """
        with self._lock:
            image = self._images.get(spec.image)
        if image is None:
            raise ShoalError(
                f"image {spec.image!r} is not usable by executor {self.name!r}",
                code="node.image",
                hint="check the agent's log for why, and fix [images] in the node config",
            )
        return plan_container(self.engine, spec, socket_path, image)

    def _ensure_network(self, name: str, label: str | None) -> None:
        """Create the internal container network ``name`` once (an existing one is kept:
        another instance of the swarm made it)."""
        with self._lock:
            if name in self._networks:
                return
            got = _cli(self.engine, *network_create_argv(name, label))
            if got.returncode != 0 and "exist" not in (got.stderr or "").lower():
                raise ShoalError(
                    f"{self.name} could not create the task network {name}: "
                    f"{_first_line(got.stderr or got.stdout or '')}",
                    code="node.executor",
                    hint="check that the container engine can create networks",
                )
            self._networks.add(name)

    def start(self, spec: InstanceSpec, socket_path: Path, token: str) -> TaskHandle:
        """Start the instance's container and hand the task runner its token on stdin."""
        plan = self.plan(spec, socket_path)
        self._prune(_state_dir(spec))
        (spec.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        if plan.user is not None and plan.user.startswith(f"{NOBODY}:"):
            _give(spec.workdir, socket_path, spec.blob_cache)
        if plan.network is not None:
            self._ensure_network(plan.network, plan.label)
        proc = spawn_with_token(container_argv(plan), token, spec.workdir, _engine_env())
        return ContainerHandle(self.engine, plan.name, proc, plan.limits)


def _state_dir(spec: InstanceSpec) -> Path:
    """The agent's state folder (work dirs are ``<state_dir>/work/<key>``)."""
    return spec.workdir.resolve().parent.parent


def _give(workdir: Path, socket_path: Path, view: Path) -> None:
    """Hand the work dir and the socket to ``nobody`` (the agent runs as root), and let
    it list its view of values (the values in it are links the agent keeps readable)."""
    for root, dirs, files in os.walk(workdir):
        for n in (root, *(os.path.join(root, x) for x in dirs + files)):
            os.chown(n, NOBODY, NOBODY)
    os.chown(socket_path, NOBODY, NOBODY)
    if view.is_dir():
        os.chown(view, NOBODY, NOBODY)
