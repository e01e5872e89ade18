"""``shoal up``: a coordinator and N node agents on this machine, as real processes.

Each node gets its share of every dataset (``--partition``, as in ``shoal simulate``)
and the node id the simulator would give it (``node-00000``, ...), so a swarm deployed
here computes what ``shoal simulate`` computes with the same nodes, seed and partition.
For a FedJob (``--job``, or ``--deploy JOB_ROOT``) the nodes are those of
``simulator_run``: ``server`` and ``site-1..site-N`` (N = ``--nodes``; the datasets
are split over the sites).
Ctrl-C or SIGTERM stops every process it started.

Once the federation is up, a node agent that dies is reported (its node id, exit code
and the tail of its log) and the rest keeps running, so the engine's retries and
``min_results`` decide what happens to the swarm under way, as on real sites;
``--restart-nodes`` starts a dead agent again. Only the coordinator's death stops
everything.
"""

from __future__ import annotations

import _thread
import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from shoal._cli.app import app, err, fail
from shoal._cli.procs import Child, Children
from shoal._cli.services import DEFAULT_PORT, load_service, public_url, tokens
from shoal._client.config import PROJECT_PROFILE, profile_path, write_profile
from shoal._errors import ShoalError

out = Console()
COORDINATOR = "the coordinator"
JOB_SERVER = "server"  # the node a FedJob's server side runs on (DESIGN 3c)


def note(message: str) -> None:
    """A progress message on stderr."""
    err.print(message, style="dim", highlight=False, markup=False, soft_wrap=True)


class _Stop(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM once it is safe to unwind."""


MAX_RESTARTS = 5  # per node: an agent that keeps dying is left dead, not restarted in a loop


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"exit code {code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"exit code {code}"


class _Watch:
    """Watches the processes once the federation is up, on a thread of its own.

    A node agent's death is reported and, with ``restart``, the agent is started again
    (at most :data:`MAX_RESTARTS` times); the task processes it left behind are killed
    (their instances are lost: the coordinator retries or fails them). The
    coordinator's death is fatal: :attr:`fatal` says why and the main thread is
    interrupted as by SIGTERM.
    """

    def __init__(self, children: Children, restart: bool) -> None:
        self.children = children
        self.restart = restart
        self.fatal: str | None = None
        self._done = threading.Event()
        self._seen: set[int] = set()  # pids whose death was handled
        self._thread = threading.Thread(target=self._loop, name="shoal-up-watch", daemon=True)

    def start(self) -> None:
        """Begin watching."""
        self._thread.start()

    def close(self) -> None:
        """Stop watching (bounded)."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def _loop(self) -> None:
        while not self._done.wait(0.3):
            for child in list(self.children.children):
                code = child.proc.poll()
                if code is None or child.proc.pid in self._seen:
                    continue
                self._seen.add(child.proc.pid)
                if child.name == COORDINATOR:
                    self.fatal = _death(child, code) + "; stopping the nodes"
                    _thread.interrupt_main(signal.SIGTERM)
                    return
                self._node_died(child, code)

    def _node_died(self, child: Child, code: int) -> None:
        self.children.kill_orphans()  # its task processes: nobody serves them any more
        text = _death(child, code)
        if not self.restart:
            text += (
                "\nthe federation keeps running without it: the coordinator counts its "
                "instances as lost once their heartbeat stops, then each task's retries "
                "and min_results decide; --restart-nodes starts a dead agent again"
            )
        elif child.restarts >= MAX_RESTARTS:
            text += f"\nnot restarting it again: it died {child.restarts + 1} times"
        else:
            try:
                restarted = self.children.restart(child)
            except OSError as e:
                text += f"\ncannot restart it: {e}"
            else:
                if restarted:
                    text += (
                        f"\nrestarted it (restart {child.restarts} of at most "
                        f"{MAX_RESTARTS}); the coordinator retries its lost instances as "
                        "each task's retries allow"
                    )
        err.print(text, style="yellow", highlight=False, markup=False, soft_wrap=True)


def _death(child: Child, code: int) -> str:
    tail = child.tail()
    return f"{child.name} died with {_exit_text(code)} (log {child.log})" + (
        f"; its last lines:\n{tail}" if tail else ""
    )


class _Signals:
    """SIGINT and SIGTERM stop ``shoal up``, but never while a child is being started
    (a half-started child could escape the cleanup)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.armed = True
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if self.armed:
            self.armed = False
            raise _Stop

    def hold(self) -> None:
        """Defer signals (until :meth:`release`)."""
        self.armed = False

    def release(self) -> None:
        """Act on a signal that arrived while held."""
        self.armed = True
        if self.received is not None:
            self.armed = False
            raise _Stop


def _datasets(items: list[str]) -> dict[str, Path]:
    result: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            fail(f"--dataset {item!r} is not NAME=PATH (e.g. --dataset digits=data/digits.npz)")
        if not Path(path).exists():
            fail(f"--dataset {name}: {path} does not exist")
        result[name] = Path(path).resolve()
    return result


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_port(host: str, port: int) -> None:
    """Fail now if something listens on ``host:port``: otherwise the nodes would join
    whatever answers there (another ``shoal up``) and fail on its join token."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As uvicorn does: a port left in TIME_WAIT by a coordinator just stopped is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            fail(
                f"port {port} on {host} is taken ({e.strerror}): another `shoal up` or "
                f"coordinator may be running there; stop it, or pass --port 0 for any free "
                "port (or another --port)"
            )


def _toml_str(value: str | Path) -> str:
    # A TOML basic string: JSON's escapes are valid TOML escapes (non-ASCII kept as is).
    return json.dumps(str(value), ensure_ascii=False)


def node_config(
    node_id: str,
    url: str,
    join_token_file: Path,
    state_dir: Path,
    datasets: dict[str, Path],
    executor: str | None,
) -> str:
    """The TOML config of one local node agent."""
    lines = [
        f"node_id = {_toml_str(node_id)}",
        f"coordinator = {_toml_str(url)}",
        f"join_token_file = {_toml_str(join_token_file)}",
        f"state_dir = {_toml_str(state_dir)}",
    ]
    if executor:
        lines.append(f"executor = {_toml_str(executor)}")
    lines += ["", "[datasets]"]
    lines += [f"{_toml_str(name)} = {_toml_str(path)}" for name, path in datasets.items()]
    return "\n".join(lines) + "\n"


def _died(children: Children) -> None:
    for c in children.dead():
        tail = c.tail()
        fail(
            f"{c.name} exited with code {c.proc.returncode} (log {c.log})"
            + (f"; its last lines:\n{tail}" if tail else ""),
            1,
        )


def _wait_until(children: Children, deadline: float, what: str, ready: Any, timeout: float) -> Any:
    while True:
        _died(children)
        result = ready()
        if result:
            return result
        if time.monotonic() > deadline:
            fail(
                f"{what} within {timeout:g}s; look at the logs under the --state folder",
                1,
            )
        time.sleep(0.2)


@app.command()
def up(
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="Number of node agents.")] = 3,
    dataset: Annotated[
        list[str] | None,
        typer.Option("--dataset", "-d", help="NAME=PATH every node maps, repeatable."),
    ] = None,
    partition: Annotated[
        str | None,
        typer.Option(
            help="Split datasets over the nodes: iid | dirichlet:ALPHA | shards:K "
            "(default: every node maps the whole dataset).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the partition and of --deploy.")] = 0,
    host: Annotated[str, typer.Option(help="Address the coordinator listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Coordinator port (0: any free port).")] = (
        DEFAULT_PORT
    ),
    state: Annotated[
        Path, typer.Option(help="Folder for the coordinator's and nodes' state and logs.")
    ] = Path(".shoal") / "up",
    executor: Annotated[
        str | None,
        typer.Option(
            help="The nodes' executor backend (default: the agent's).", show_default=False
        ),
    ] = None,
    deploy: Annotated[
        str | None,
        typer.Option(
            help="Deploy path/to/swarm.py[:Class] (or an exported FedJob folder) once "
            "ready, follow it, stop everything and exit 0 if it succeeded.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the coordinator and the nodes.")
    ] = 60.0,
    run_timeout: Annotated[
        float | None,
        typer.Option(help="With --deploy: give up on the swarm after this many seconds."),
    ] = None,
    job: Annotated[
        bool,
        typer.Option(
            "--job",
            help="Start the nodes a FedJob runs on: server and site-1..site-N (N = "
            "--nodes); implied by --deploy JOB_ROOT.",
        ),
    ] = False,
    restart_nodes: Annotated[
        bool,
        typer.Option(
            "--restart-nodes",
            help=f"Start a node agent that died again (at most {MAX_RESTARTS} times each).",
        ),
    ] = False,
    profile: Annotated[
        str,
        typer.Option(
            help="Also write the URL and token to ~/.config/shoal/profiles/NAME.toml, for "
            "`shoal ... --profile NAME` from any folder."
        ),
    ] = "local",
) -> None:
    """Start a coordinator and N node agents on this machine; Ctrl-C stops them all."""
    from shoal._data.nodes import node_id
    from shoal._data.partition import partition as split

    if nodes < 1:
        fail(f"--nodes {nodes}: start at least one node")
    try:
        profile_file = profile_path(profile)
    except ShoalError as e:
        fail(e)
    if not 0 <= port <= 65535:
        fail(f"--port {port} is not a port number (0-65535)")
    sources = _datasets(dataset or [])
    is_job = False
    if deploy is not None:
        # before anything starts: a typo should cost no waiting
        is_job = _check_job(deploy, nodes)
        if not is_job:
            _check_swarm(deploy)
    job = job or is_job
    state = state.resolve()
    ids = [node_id(i) for i in range(nodes)]
    if job:  # DESIGN 3c: a server node beside the sites
        ids = [JOB_SERVER, *(f"site-{i}" for i in range(1, nodes + 1))]
    maps: list[dict[str, Path]] = [{} for _ in ids]
    try:
        state.mkdir(parents=True, exist_ok=True)
        for name, path in sources.items():
            shares: list[Path | None] = list(
                split(path, nodes, partition, seed, state / "data" / name, name)
                if partition
                else [path] * nodes
            )
            if job:  # the sites hold the data; the server maps it only without --partition
                shares = [None if partition else path, *shares]
            for m, share in zip(maps, shares, strict=True):
                if share is not None:
                    m[name] = share
    except ShoalError as e:
        fail(e)
    except OSError as e:
        fail(f"cannot prepare {state}: {e}")
    if port:
        _check_port(host, port)
    port = port or _free_port(host)
    url = public_url(host, port, tls=False)
    children = Children(subreaper=True)
    watch = _Watch(children, restart_nodes)
    code = 0
    with _Signals() as signals:
        try:
            user = _bring_up(
                children, signals, url, host, port, state, ids, maps, executor, timeout
            )
            watch.start()  # from now on a node's death is reported, not fatal
            _ready(url, user, ids, state, profile, profile_file, job)
            if deploy is None:
                while True:  # until Ctrl-C / SIGTERM, or the coordinator dies
                    time.sleep(1.0)
            code = _run(url, user, deploy, seed, run_timeout, is_job)
        except _Stop:
            if watch.fatal is not None:
                err.print(
                    Text.assemble(("error:", "bold red"), f" {watch.fatal}"),
                    highlight=False,
                    soft_wrap=True,
                )
                code = 1
            else:
                code = 130 if deploy is not None else 0
        finally:
            signals.hold()  # a second Ctrl-C must not cut the cleanup short
            watch.close()
            if children.children:
                note("stopping the nodes and the coordinator...")
                first = [c for c in children.children if c.name != COORDINATOR]
                children.stop(timeout=10.0, order=[first])
                note("stopped")
    raise typer.Exit(code)


def _bring_up(
    children: Children,
    signals: _Signals,
    url: str,
    host: str,
    port: int,
    state: Path,
    ids: list[str],
    maps: list[dict[str, Path]],
    executor: str | None,
    timeout: float,
) -> str:
    """Start the coordinator, then the agents; wait until every node joined.

    Returns the user token.
    """
    shoal_cmd = [sys.executable, "-m", "shoal"]
    coord_state = state / "coordinator"
    listen = ["--host", host, "--port", str(port)]
    signals.hold()
    coordinator = children.start(
        COORDINATOR,
        [*shoal_cmd, "coordinator", "start", "--state", str(coord_state), *listen],
        state / "coordinator.log",
    )
    signals.release()
    note(f"starting the coordinator on {url} (log {coordinator.log})")
    deadline = time.monotonic() + timeout
    _wait_until(
        children, deadline, f"the coordinator did not answer on {url}",
        lambda: _healthy(url), timeout,
    )  # fmt: skip
    _, user = tokens(coord_state)
    join_file = coord_state / load_service("shoal._coord.server", "coordinator").JOIN_TOKEN_FILE
    for i, nid in enumerate(ids):
        folder = state / "nodes" / nid
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "node.toml"
        config.write_text(node_config(nid, url, join_file, folder, maps[i], executor))
        signals.hold()
        children.start(
            f"node agent {nid}",
            [*shoal_cmd, "node", "start", "--config", str(config)],
            folder / "agent.log",
        )
        signals.release()
    note(f"started {len(ids)} node agent(s); waiting for them to join")
    _wait_until(
        children, deadline, f"not all {len(ids)} nodes joined the coordinator",
        lambda: _joined(url, user, ids), timeout,
    )  # fmt: skip
    return user


def _check_swarm(target: str) -> None:
    from shoal._define.compile import compile_swarm
    from shoal._define.loader import load_swarm

    try:
        swarm, source = load_swarm(target)
        compile_swarm(swarm, source=source)
    except ShoalError as e:
        fail(e)


def _check_job(target: str, nodes: int) -> bool:
    """Whether ``target`` is an exported FedJob; fails on one that cannot run on
    ``nodes`` sites."""
    from shoal.job._deploy import find_job, load

    try:
        if find_job(target) is None:
            return False
        _, sites = load(target)
    except ShoalError as e:
        fail(e)
    wanted = {f"site-{i}" for i in range(1, nodes + 1)}
    if not set(sites) <= wanted:
        fail(
            f"the job {target} runs on {', '.join(sites)}; --nodes {nodes} starts "
            f"{', '.join(sorted(wanted))}: pass --nodes {len(sites)}"
        )
    return True


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/v1/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _joined(url: str, token: str, ids: list[str]) -> bool:
    import httpx

    try:
        r = httpx.get(f"{url}/v1/nodes", headers={"Authorization": f"Bearer {token}"}, timeout=5.0)
    except httpx.HTTPError:
        return False
    if r.status_code != 200:
        return False
    connected = {n.get("node_id") for n in r.json() if n.get("connected")}
    return set(ids) <= connected


def _ready(
    url: str,
    token: str,
    ids: list[str],
    state: Path,
    profile: str,
    profile_file: Path,
    job: bool = False,
) -> None:
    span = ids[0] if len(ids) == 1 else f"{ids[0]} ... {ids[-1]}"
    here = state / "profile.toml"
    note_line = f"written by `shoal up` for the coordinator at {url} (state {state})"
    try:
        write_profile(here, url, token, note_line)
        write_profile(profile_file, url, token, note_line)
    except OSError as e:
        fail(f"cannot write the credentials profile: {e}", 1)
    # Plain lines, never wrapped: they are copied and parsed. The token is never printed.
    typer.echo(f"shoal up: coordinator {url} with {len(ids)} node(s) ({span}) is ready")
    if state.parts[-2:] == PROJECT_PROFILE.parts[:2]:
        project = state.parent.parent
        where = "this folder" if project == Path.cwd().resolve() else str(project)
        typer.echo(
            f"credentials (mode 0600, token not shown): {here}, found by shoal commands run "
            f"in {where} or below, and {profile_file}, for --profile {profile} anywhere"
        )
    else:
        typer.echo(
            f"credentials (mode 0600, token not shown): {here} and {profile_file}; "
            f"shoal commands find them with --profile {profile}"
        )
    if job:
        typer.echo("deploy an exported job with: shoal deploy JOB_ROOT")
    else:
        typer.echo("deploy a swarm with: shoal deploy path/to/swarm.py")
    typer.echo(
        f"logs: {state / 'coordinator.log'} and {state / 'nodes'}/NODE/agent.log; "
        "Ctrl-C stops everything"
    )


def _run(
    url: str, token: str, target: str, seed: int, run_timeout: float | None, job: bool = False
) -> int:
    from shoal._cli.remote import follow
    from shoal._client import Client
    from shoal.job._deploy import deploy_job

    try:
        with Client(url, token) as client:
            if job:
                swarm_id = deploy_job(client, target, seed=seed)
            else:
                swarm_id = client.deploy(target, seed=seed)
            typer.echo(f"deployed {target} as swarm {swarm_id}")
            final = follow(client, swarm_id, run_timeout, out)
    except ShoalError as e:
        err.print(Text.assemble(("error:", "bold red"), f" {e}"), highlight=False, soft_wrap=True)
        return 2
    return 0 if final == "succeeded" else 1
