"""Starting node-level task instances the way the agent does, without an agent.

Shared by the executor tests (``tests/exec``, ``tests/node/test_sandbox_oci.py``):

- :func:`make_spec` / :func:`write_bundle`: an instance's folders, dataset and bundle;
- :class:`MiniAgent`: the agent's side of one instance (its socket, the token check, the
  hello reply with the instance context, the frames up to ``done``);
- :func:`probe_spec` / :func:`run_probe` with :data:`PROBE_MODULE`: a task that records
  what it can reach (its dataset, a host file elsewhere, a TCP server on the host's
  127.0.0.1, its environment, the root file system) into ``$HOME/checks.json``;
- :func:`oci_engine`: a podman or docker executor that really runs containers here, with
  a test image built from this machine's Python, or a skip that says what is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from helpers import poll_for, write_bundle

from shoal._exec import oci
from shoal._exec.base import Executor, InstanceSpec, TaskHandle
from shoal._exec.oci import HOST_SHOAL_MOUNT, OciExecutor
from shoal._runtime import protocol

SECRET = "s3cr3t-agent-value"
TOKEN = "the-per-instance-token"


def make_spec(root: Path, **kw: Any) -> InstanceSpec:
    for d in ("work/abc/outbox", "work/abc/tmp", "bundle", "blobs", "data"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "data" / "numbers.npy").write_bytes(b"x")
    fields: dict[str, Any] = dict(
        instance_id="s/0/t/0/0",
        interpreter=Path("/ignored/python"),
        pythonpath="/agent/only/path",
        workdir=root / "work" / "abc",
        bundle_dir=root / "bundle",
        datasets={"numbers": root / "data" / "numbers.npy"},
        blob_cache=root / "blobs",
        memory_mb=256,
        cpu_seconds=30,
        image="python",
    )
    fields.update(kw)
    return InstanceSpec(**fields)


PROBE_MODULE = """
import json, os, socket, sys

def main():
    c = {"uid": os.getuid(), "argv": sys.argv}
    c["data"] = open(DATA).read()
    try:
        open(DATA, "a").close()
        c["data_writable"] = True
    except OSError:
        c["data_writable"] = False
    try:
        c["secret"] = open(SECRET_FILE).read()
    except OSError as e:
        c["secret"] = type(e).__name__
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", PORT))
        c["net"] = "connected"
    except OSError as e:
        c["net"] = type(e).__name__
    finally:
        s.close()
    c["env"] = dict(os.environ)
    try:
        open(os.path.join(BUNDLE, "written-by-the-task"), "w").close()
        c["bundle_writable"] = True
    except OSError:
        c["bundle_writable"] = False
    with open("scratch", "w") as f:  # its work dir
        f.write("work is writable")
    try:
        open("/shoal-root-write-test", "w").close()
        c["root_writable"] = True
    except OSError:
        c["root_writable"] = False
    with open("/tmp/scratch", "w") as f:
        f.write("tmp is writable")
    with open(os.path.join(os.environ["HOME"], "checks.json"), "w") as f:
        json.dump(c, f)
"""


class MiniAgent:
    """The agent's side of one instance: its socket, the hello, and the frames."""

    def __init__(
        self,
        executor: Executor,
        spec: InstanceSpec,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self.executor, self.spec = executor, spec
        self.on_connected = on_connected
        self.dir = Path(tempfile.mkdtemp(prefix="shoal-oci-"))  # short: socket paths
        self.sock_path = self.dir / "i.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.sock_path))
        self.sock_path.chmod(0o600)
        self.listener.listen(1)
        self.handle: TaskHandle | None = None
        self.connected = threading.Event()

    def close(self) -> None:
        if self.handle is not None and self.handle.poll() is None:
            self.handle.kill()
        self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, deadline_s: float = 90.0) -> tuple[dict[str, Any] | None, int | None]:
        """The ``done`` frame (None if the task died first) and the exit status."""
        self.handle = self.executor.start(self.spec, self.sock_path, TOKEN)
        self.listener.settimeout(0.2)  # the pause between polls

        def connected_or_dead() -> tuple[socket.socket | None] | None:
            assert self.handle is not None
            if self.handle.poll() is not None:
                return (None,)
            with contextlib.suppress(TimeoutError):
                return (self.listener.accept()[0],)
            return None

        (conn,) = poll_for(connected_or_dead, deadline_s, "the task to connect", interval=0)
        if conn is None:
            return None, self.handle.poll()
        with conn:
            conn.settimeout(deadline_s)
            hello = protocol.recv(conn)
            assert hello["op"] == "hello" and hello["args"]["token"] == TOKEN
            if self.on_connected is not None:  # before the reply: the task waits for it
                self.on_connected()
            protocol.send(
                conn,
                {
                    "id": hello["id"],
                    "ok": {
                        "swarm_id": "s",
                        "instance_id": self.spec.instance_id,
                        "node_id": "n1",
                        "alias": "t",
                        "iteration": 0,
                        "attempt": 0,
                        "module": "sha256:" + "1" * 64,
                        "folder": str(self.spec.bundle_dir),
                        "outbox": str(self.spec.workdir / "outbox"),
                        "global_versions": {},
                    },
                },
            )
            self.connected.set()
            while True:
                try:
                    frame = protocol.recv(conn)
                except (protocol.ChannelClosed, OSError):
                    return None, self.handle.wait(30)
                if frame.get("op") == "done" and "id" not in frame:
                    return frame, self.handle.wait(30)
                if frame.get("id") is not None:
                    err = {"code": "test", "message": "not served by this test"}
                    protocol.send(conn, {"id": frame["id"], "error": err})


def _cached_image_tar(tar_path: Path) -> None:
    """A root filesystem with this machine's Python, its stdlib, numpy and msgpack."""
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    python = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    packages = [Path(np.__file__).parent, Path(msgpack.__file__).parent]
    numpy_libs = Path(np.__file__).parent.parent / "numpy.libs"
    if numpy_libs.is_dir():
        packages.append(numpy_libs)
    objects = [python, *stdlib.glob("lib-dynload/*.so")]
    objects += [p for d in packages for p in d.rglob("*.so*")]
    libs: set[str] = set()
    for i in range(0, len(objects), 64):
        out = subprocess.run(
            ["ldd", *map(str, objects[i : i + 64])], capture_output=True, text=True, check=False
        ).stdout
        for m in re.finditer(r"=> (/\S+)|^\s*(/\S+) \(", out, re.M):
            lib = m.group(1) or m.group(2)
            if "numpy.libs" not in lib:
                libs.add(lib)
    skip = re.compile(
        r"/(test|tests|idlelib|tkinter|turtledemo|ensurepip|__pycache__|site-packages|"
        r"dist-packages|config-[^/]*)(/|$)"
    )

    def keep(ti: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if skip.search(ti.name) else ti

    with tarfile.open(tar_path, "w") as tar:
        for d in ("usr", "usr/bin", "usr/lib", "lib", "lib64", "tmp", "etc"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(ti)
        tar.add(python, f"usr/bin/python{ver}")
        link = tarfile.TarInfo("usr/bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, f"python{ver}"
        tar.addfile(link)
        for lib in sorted(libs):  # the loader looks in /lib64 and /lib (ld.so defaults)
            top = "lib64" if lib.startswith("/lib64/") else "lib"
            tar.add(os.path.realpath(lib), f"{top}/{Path(lib).name}")
        # Packages inside the stdlib folder: on sys.path whatever the Python's layout.
        tar.add(stdlib, f"usr/lib/python{ver}", filter=keep)
        for p in packages:
            tar.add(p, f"usr/lib/python{ver}/{p.name}", filter=keep)


def _hardened_probe(engine: str, image: str) -> str | None:
    """None if ``engine`` runs a container with the executor's isolation flags."""
    argv = [
        engine,
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
        "--pids-limit",
        "64",
        "--memory",
        "256m",
        "--memory-swap",
        "256m",
        "--user",
        f"{oci.NOBODY}:{oci.NOBODY}" if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}",
        "--entrypoint",
        "python3",
        image,
        "-c",
        "import numpy, msgpack",
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if proc.returncode == 0 else oci._first_line(proc.stderr or proc.stdout)


IMAGE = "localhost/shoal-test-python:{ver}-np{np}"


@contextlib.contextmanager
def oci_engine(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OciExecutor, str]]:
    """An executor of engine ``name`` (podman, docker) that really runs containers here,
    with the test image checked as image ``python``, or a skip that says what is
    missing."""
    binary = shutil.which(name)
    if binary is None:
        pytest.skip(f"{name} is not installed: the {name} executor's real runs are skipped")
    try:
        info = subprocess.run(
            [binary, "info"], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"`{name} info` did not answer in 60 s: no {name} engine here")
    if info.returncode != 0:
        why = oci._first_line(info.stderr or info.stdout)
        pytest.skip(f"`{name} info` fails ({why}): no {name} engine runs containers here")
    image = IMAGE.format(ver=f"{sys.version_info[0]}{sys.version_info[1]}", np=np.__version__)
    conf_env = os.environ.get("CONTAINERS_CONF")
    try:
        exists = subprocess.run(
            [binary, "image", "inspect", image], capture_output=True, timeout=60, check=False
        )
        if exists.returncode != 0:
            tar_path = tmp_path_factory.mktemp("image") / "rootfs.tar"
            _cached_image_tar(tar_path)
            built = subprocess.run(
                [binary, "import", str(tar_path), image],
                capture_output=True,
                text=True,
                timeout=110,
                check=False,
            )
            tar_path.unlink()
            if built.returncode != 0:
                why = oci._first_line(built.stderr or built.stdout)
                pytest.skip(f"`{name} import` of a test image fails: {why}")
        why = _hardened_probe(binary, image)
        if why is not None and name == "podman" and shutil.which("runc") and not conf_env:
            # Podman's defaults fail on some hosts (crun on a hybrid cgroup hierarchy,
            # default ulimits above this user's hard limits): retry with runc and no
            # default ulimits. That is the engine's configuration, not the executor's.
            conf = tmp_path_factory.mktemp("containers") / "containers.conf"
            conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n')
            os.environ["CONTAINERS_CONF"] = str(conf)
            if _hardened_probe(binary, image) is None:
                why = None
            else:
                del os.environ["CONTAINERS_CONF"]
        if why is not None:
            pytest.skip(f"{name} cannot run a hardened container here: {why}")
    except subprocess.TimeoutExpired as e:
        pytest.skip(f"{name} did not answer in time: {e}")
    try:
        executor = OciExecutor(binary)
        # The image has no shoal: the executor binds the agent's package into it.
        assert executor.check_image("python", image) == (Path("python3"), HOST_SHOAL_MOUNT)
        yield executor, image
    finally:
        if conf_env is None:
            os.environ.pop("CONTAINERS_CONF", None)
        else:
            os.environ["CONTAINERS_CONF"] = conf_env


@contextlib.contextmanager
def outside_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """A host file outside every bind and a TCP server on 127.0.0.1."""
    secret = tmp_path_factory.mktemp("elsewhere") / "secret.txt"
    secret.write_text("the host's secret")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield secret, server.getsockname()[1]
    finally:
        server.close()


def probe_spec(root: Path, secret: Path, port: int, **kw: Any) -> InstanceSpec:
    spec = make_spec(root, pythonpath=None, interpreter=Path(sys.executable), **kw)
    (spec.workdir / "outbox").mkdir(exist_ok=True)
    data = spec.datasets["numbers"]
    data.write_text("dataset bytes")
    data.chmod(0o644)
    code = PROBE_MODULE.replace("DATA", repr(str(data)))
    code = code.replace("SECRET_FILE", repr(str(secret))).replace("PORT", str(port))
    code = code.replace("BUNDLE", repr(str(spec.bundle_dir)))
    write_bundle(spec.bundle_dir, code)
    for p in (root, root / "work", root / "bundle", root / "data", root / "blobs"):
        p.chmod(p.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)
    return spec


def run_probe(
    executor: Executor, spec: InstanceSpec, on_connected: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Run the probe task to its end; what it recorded (it must succeed)."""
    agent = MiniAgent(executor, spec, on_connected)
    try:
        done, rc = agent.run()
    finally:
        agent.close()
    log = (spec.workdir / "runner.log").read_text(errors="replace")
    assert done is not None and done["ok"], f"rc={rc} done={done} log:\n{log}"
    assert rc == 0
    checks: dict[str, Any] = json.loads((spec.workdir / "checks.json").read_text())
    return checks
