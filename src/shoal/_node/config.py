"""The node agent's TOML configuration.

Example::

    node_id = "hospital-a"
    coordinator = "https://coordinator.example:8750"
    join_token_file = "/etc/shoal/join-token"   # or join_token = "..."
    state_dir = "/var/lib/shoal/node"
    executor = "auto"                           # bwrap if it works here, else process
    heartbeat_interval_s = 5
    # ca_cert = "/etc/shoal/ca.pem"             # trust a self-signed coordinator CA
    # gpu = false                             # default: detected with nvidia-smi
    # install_requirements = false            # true: install what an image lacks ...
    # package_index = "/srv/wheels"           # ... from this folder of wheels or index URL

    [datasets]
    mnist = "/data/mnist.npz"

    [images]
    python = "/opt/venvs/tasks"                 # an interpreter or a virtual env folder

    [privacy.mnist]                             # this dataset leaves only under DP
    epsilon = 3.0                               # its lifetime budget (epsilon, delta)
    delta = 1e-5

    [limits]
    max_concurrent = 4
    memory_mb = 4096
    cpu_seconds = 3600
    wall_timeout_s = 86400
    max_processes = 512                         # processes and threads (bwrap, cgroups)
    # cpus = 2.0                                # a CPU quota in cores (bwrap, cgroups)

    [warm]                                      # task processes kept for the next instance
    enabled = true                              # false: a fresh process for every instance
    idle_timeout_s = 60
    max_runs = 1000

Relative paths are relative to the config file. Every validation error names the key
and how to fix it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shoal._errors import ShoalError
from shoal._node.warm import WarmSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

DEFAULT_IMAGE = "python"
# Executors whose [images] are OCI image references (checked by the executor when the
# agent starts), not interpreter paths.
OCI_EXECUTORS = ("podman", "docker")
# Node ids and dataset names: the character set of shoal._plan.NAME_PATTERN (tests
# check that the two agree; the agent does not import the plan package).
_NODE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# One coordinator URL, or several separated by commas.
_COORDINATORS = r"^https?://[^\s,]+(\s*,\s*https?://[^\s,]+)*$"

_FIXES = {
    "node_id": "letters, digits, '.', '_' or '-' (at most 128), e.g. node_id = \"site-a\"",
    "coordinator": 'the coordinator URL, e.g. coordinator = "https://coord:8750"; several '
    '(an active one and standbys): "https://a:8750,https://b:8750" or a list',
    "state_dir": "a folder the agent may write (credential, caches)",
    "executor": 'an executor name: "auto", "bwrap" or "process"',
    "heartbeat_interval_s": "a number of seconds > 0, e.g. 5",
    "datasets": "a table [datasets] of name = \"path\"; names are letters, digits, '.', "
    "'_' or '-' (at most 128), starting with a letter or digit",
    "images": 'a table [images] of name = "interpreter or venv path" (podman, docker: '
    '"OCI image reference")',
    "privacy": "a table [privacy.DATASET] with epsilon = a number > 0 and delta = a number "
    "in [0, 1) for a dataset of [datasets]",
}


class PrivacyBudget(BaseModel):
    """A dataset's lifetime differential-privacy budget, ``(epsilon, delta)``.

    Every DP query or training round on the dataset spends from it (the node's ledger
    in ``state_dir``, kept across restarts); a request past it is refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: Annotated[float, Field(gt=0)]
    delta: Annotated[float, Field(ge=0, lt=1)] = 1e-5


class Limits(BaseModel):
    """What one instance may use; None: no limit.

    ``memory_mb`` is the RAM of all of an instance's processes together under ``bwrap``
    with cgroups (an address-space rlimit otherwise); ``max_processes`` (processes and
    threads at once) and ``cpus`` (a CPU quota in cores) need the ``bwrap`` executor and
    writable cgroups; ``cpu_seconds`` is an rlimit; ``wall_timeout_s`` is enforced by
    the agent.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrent: Annotated[int, Field(ge=1)] = 4
    memory_mb: Annotated[int, Field(ge=16)] | None = None
    cpu_seconds: Annotated[int, Field(ge=1)] | None = None
    wall_timeout_s: Annotated[float, Field(gt=0)] | None = None
    max_processes: Annotated[int, Field(ge=8)] | None = 512
    cpus: Annotated[float, Field(gt=0)] | None = None


class NodeConfig(BaseModel):
    """A validated node configuration (see the module docstring for the file format).

    Attributes
    ----------
    node_id
        This node's id at the coordinator.
    coordinator
        The coordinator's base URL (``http://`` or ``https://``); several coordinators
        on one PostgreSQL database (one active, standbys): their URLs separated by
        commas (a TOML list is joined so), tried in turn when one stops answering.
    join_token, join_token_file
        The join token, inline or in a file (needed only to enrol).
    state_dir
        The credential and the bundle / blob caches.
    datasets
        Dataset name -> file or folder.
    images
        Image name -> Python interpreter or virtual environment folder; ``python``
        defaults to the agent's own interpreter. With executor ``podman`` or ``docker``:
        image name -> OCI image reference (kept as written; no default).
    executor
        The name of a registered executor: ``auto`` (the default: ``bwrap`` when it
        works on this machine, else ``process`` with a warning), ``bwrap`` or
        ``process`` (alias ``subprocess``).
    limits
        Per-instance limits and how many instances run at once.
    privacy
        Dataset name -> its privacy budget (``[privacy.NAME]``), enforced by the agent.
    heartbeat_interval_s
        Seconds between heartbeats.
    retry_max_s
        The longest pause between retries when the coordinator is unreachable.
    ca_cert
        A CA bundle to verify the coordinator's TLS certificate with.
    install_requirements
        Whether a module's ``requirements`` that an image lacks are installed (from
        ``package_index`` only, into a folder cached per image and requirements) instead
        of refusing the task with the list (the default).
    package_index
        The node's own package index: a folder of wheels (``pip --no-index
        --find-links``) or an index URL.
    gpu
        Whether this node offers its GPUs: None (the default) offers the GPUs
        ``nvidia-smi`` detects, ``false`` none, ``true`` the detected ones (one GPU of
        unknown memory, with a warning, when none is detected).
    warm
        Warm task processes (:class:`~shoal._node.warm.WarmSettings`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: Annotated[str, Field(pattern=_NODE_ID)]
    coordinator: Annotated[str, Field(pattern=_COORDINATORS)]
    join_token: str | None = None
    join_token_file: Path | None = None
    state_dir: Path
    datasets: dict[Annotated[str, Field(pattern=_NODE_ID)], Path] = {}
    images: dict[str, Path] = {}
    executor: str = "auto"
    limits: Limits = Limits()
    privacy: dict[str, PrivacyBudget] = {}
    heartbeat_interval_s: Annotated[float, Field(gt=0)] = 5.0
    retry_max_s: Annotated[float, Field(gt=0)] = 30.0
    ca_cert: Path | None = None
    gpu: bool | None = None
    install_requirements: bool = False
    package_index: str | None = None
    warm: WarmSettings = WarmSettings()

    @field_validator("coordinator", mode="before")
    @classmethod
    def _join_urls(cls, value: Any) -> Any:
        """A TOML list of URLs is the comma-separated form."""
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return ",".join(value)
        return value

    def read_join_token(self) -> str | None:
        """The join token, from the config or its file (None if neither is set)."""
        if self.join_token:
            return self.join_token
        if self.join_token_file is not None:
            try:
                return self.join_token_file.read_text().strip() or None
            except OSError as e:
                raise ShoalError(
                    f"cannot read join_token_file {self.join_token_file}: {e.strerror}",
                    code="node.config",
                    hint="fix join_token_file, or set join_token",
                ) from None
        return None

    def interpreter(self, image: str) -> Path | None:
        """The Python interpreter of an image (None if the node has no such image)."""
        path = self.images.get(image)
        if path is None:
            return Path(sys.executable) if image == DEFAULT_IMAGE else None
        return path / "bin" / "python" if path.is_dir() else path


def _resolve(doc: dict[str, Any], base: Path) -> dict[str, Any]:
    def rel(value: Any) -> Any:
        if isinstance(value, str):
            p = Path(value).expanduser()
            return str(p if p.is_absolute() else (base / p).resolve())
        return value

    out = dict(doc)
    for key in ("state_dir", "join_token_file", "ca_cert"):
        if key in out:
            out[key] = rel(out[key])
    index = out.get("package_index")
    if isinstance(index, str) and "://" not in index:  # a folder, not a URL
        out["package_index"] = rel(index)
    oci = out.get("executor") in OCI_EXECUTORS  # images are references, not paths
    for table in ("datasets",) if oci else ("datasets", "images"):
        if isinstance(out.get(table), dict):
            out[table] = {k: rel(v) for k, v in out[table].items()}
    return out


def _problem(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "<file>"
    top = str(err["loc"][0]) if err["loc"] else ""
    if err["type"] == "missing":
        msg = f"{loc}: missing"
    elif err["type"] == "extra_forbidden":
        return f"{loc}: unknown key (remove it or check its spelling)"
    else:
        msg = f"{loc}: {err['msg']}"
    fix = _FIXES.get(top)
    return f"{msg} (set {fix})" if fix else msg


def _check_paths(cfg: NodeConfig) -> list[str]:
    problems = []
    for name, path in cfg.datasets.items():
        if not path.exists():
            problems.append(
                f"datasets.{name}: {path} does not exist (fix the path or remove the entry)"
            )
    for name, path in ({} if cfg.executor in OCI_EXECUTORS else cfg.images).items():
        interp = cfg.interpreter(name)
        if interp is None or not interp.exists():
            problems.append(
                f"images.{name}: {path} is neither a Python interpreter nor a virtual "
                "environment folder with bin/python (fix the path)"
            )
    if not re.match(r"^[A-Za-z0-9_.-]+$", cfg.executor):
        problems.append(f"executor: {cfg.executor!r} is not an executor name")
    if cfg.ca_cert is not None and not cfg.ca_cert.is_file():
        problems.append(f"ca_cert: {cfg.ca_cert} does not exist (fix the path)")
    if cfg.install_requirements and not cfg.package_index:
        problems.append(
            "install_requirements: true needs package_index (a folder of wheels or an "
            "index URL the node may install from)"
        )
    for name in cfg.privacy:
        if name not in cfg.datasets:
            problems.append(
                f"privacy.{name}: no dataset {name!r} in [datasets] (fix the name or add it)"
            )
    if cfg.privacy:
        try:
            import dp_accounting  # noqa: F401
        except ImportError:
            problems.append(
                "privacy: budgets need the dp-accounting library (pip install 'shoal[privacy]')"
            )
    if cfg.join_token_file is not None and cfg.join_token is not None:
        problems.append("join_token and join_token_file are both set (keep one)")
    return problems


def parse_config(doc: dict[str, Any], base: Path) -> NodeConfig:
    """Validate a parsed TOML document; relative paths are resolved against ``base``.

    Raises
    ------
    ShoalError
        ``node.config`` listing every problem, each with its key and fix.
    """
    try:
        cfg = NodeConfig.model_validate(_resolve(doc, base))
    except ValidationError as e:
        problems = [_problem(err) for err in e.errors()]
    else:
        problems = _check_paths(cfg)
        if not problems:
            return cfg
    raise ShoalError(
        "the node configuration has problems:\n  " + "\n  ".join(problems),
        code="node.config",
        hint="fix the keys named above in the TOML file",
    )


def load_config(path: Path | str) -> NodeConfig:
    """Read and validate a node's TOML file.

    Raises
    ------
    ShoalError
        ``node.config`` if the file is missing, not TOML, or invalid.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ShoalError(
            f"cannot read node config {path}: {e.strerror}",
            code="node.config",
            hint="pass --config with the path of the node's TOML file",
        ) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ShoalError(
            f"node config {path} is not valid TOML: {e}",
            code="node.config",
            hint="fix the syntax at the position shown",
        ) from None
    return parse_config(doc, path.resolve().parent)
