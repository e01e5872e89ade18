"""How the CLI shows values, swarm statuses and nodes, and writes values to files."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from shoal._api.records import InstanceRecord, NodeRecord, SwarmStatus, SwarmSummary

STATUS_STYLE = {"succeeded": "green", "failed": "red", "stopped": "yellow", "running": "cyan"}


class _Raw(str):
    def __repr__(self) -> str:
        return str(self)


def _brief(value: Any) -> Any:
    # Arrays are summarised by shape and dtype, inside dicts and lists too.
    import numpy as np

    if isinstance(value, np.ndarray):
        return _Raw(f"array{value.shape} {value.dtype}")
    if isinstance(value, dict):
        return {k: _brief(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_brief(v) for v in value)
    return value


def show(value: Any, width: int = 80) -> str:
    """A one-line summary of a value (arrays as shape and dtype), cut at ``width``."""
    text = repr(_brief(value))
    return text if len(text) <= width else text[: width - 3] + "..."


def when(value: Any) -> str:
    """A timestamp (epoch seconds or text) as local ``YYYY-MM-DD HH:MM:SS``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return "" if value is None else str(value)


def ago(value: Any) -> str:
    """Epoch seconds as ``12s ago`` (other values as text)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        s = max(0.0, time.time() - float(value))
        if s < 120:
            return f"{s:.0f}s ago"
        if s < 7200:
            return f"{s / 60:.0f}m ago"
        return when(value)
    return "never" if not value else str(value)


def styled_status(status: str) -> Text:
    """A swarm status in its colour."""
    return Text(status, style=f"bold {STATUS_STYLE.get(status, 'white')}")


def swarms_table(swarms: list[SwarmSummary]) -> Table:
    """The table of ``shoal status`` without a swarm id."""
    t = Table(show_edge=False)
    for col in ("swarm", "name", "status", "iteration", "created"):
        # Ids are copied from here: never cut or wrapped.
        t.add_column(col, justify="right" if col == "iteration" else "left", no_wrap=True)
    t.add_column("reason", ratio=1)
    for s in swarms:
        t.add_row(
            s.swarm_id,
            s.name,
            styled_status(s.status),
            str(s.iteration),
            when(s.created),
            Text(s.reason),
        )
    return t


def progress_line(st: SwarmStatus) -> str:
    """One line: status, iteration and per-task counts (for a stream that is not a TTY)."""
    parts = []
    for alias, c in st.tasks.items():
        part = f"{alias} {c.succeeded}/{c.scheduled}"
        if c.running:
            part += f" ({c.running} running)"
        if c.failed:
            part += f" ({c.failed} failed)"
        parts.append(part)
    return f"{st.status} iteration {st.iteration}: " + (", ".join(parts) or "no task placed yet")


def status_view(st: SwarmStatus, tracebacks: bool = True) -> RenderableType:
    """One swarm's status: header, per-task counts and every failure with its node."""
    head = Text.assemble(
        ("swarm ", "bold"),
        (st.swarm_id, "bold"),
        f" ({st.name}): ",
        styled_status(st.status),
        f", iteration {st.iteration}",
    )
    parts: list[RenderableType] = [head]
    more = []
    if st.created:
        more.append(f"created {when(st.created)}")
    if st.reason:
        more.append(f"reason: {st.reason}")
    if more:
        parts.append(Text(", ".join(more)))
    if st.tasks:
        t = Table(show_edge=False, title=None)
        for col in ("task", "module", "scheduled", "running", "succeeded", "failed"):
            t.add_column(col, justify="left" if col in ("task", "module") else "right")
        for alias, c in st.tasks.items():
            t.add_row(
                alias,
                c.module + (f" {c.version}" if c.version else ""),
                str(c.scheduled),
                str(c.running),
                str(c.succeeded),
                Text(str(c.failed), style="red" if c.failed else ""),
            )
        parts.append(t)
    for alias, why in st.waiting.items():
        parts.append(
            Text.assemble(("waiting ", "bold yellow"), f"{alias} for an eligible node: {why}")
        )
    if st.running and st.status == "running":
        parts.append(running_view(_ages(st.running, time.time()), limit=5))
    for f in st.failures:
        parts.append(
            Text.assemble(
                ("failed ", "bold red"),
                f"{f.alias} on node {f.node_id} (iteration {f.iteration}, "
                f"attempt {f.attempt}, {f.kind}): {f.error}",
            )
        )
        if tracebacks and f.traceback:
            # Never folded: paths and code lines stay whole (and clickable).
            parts.append(Text(f.traceback.rstrip(), no_wrap=True, overflow="ignore"))
    return Group(*parts)


def nodes_table(nodes: list[NodeRecord]) -> Table:
    """The table of ``shoal nodes``."""
    t = Table(show_edge=False)
    cols = ("node", "connected", "datasets", "cpu", "memory", "gpu", "images", "last seen")
    for col in (*cols, "running"):
        right = col in ("running", "cpu", "memory")
        t.add_column(col, justify="right" if right else "left", no_wrap=col == "node")
    for n in nodes:
        t.add_row(
            n.node_id,
            Text("yes", style="green") if n.connected else Text("no", style="red"),
            ", ".join(n.datasets),
            "?" if n.cpu is None else f"{n.cpu:g}",
            "?" if n.memory is None else _gib(n.memory),
            _gpus(n),
            "any" if n.images is None else ", ".join(n.images),
            ago(n.last_seen),
            str(n.running),
        )
    return t


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}Gi"


def _gpus(n: NodeRecord) -> str:
    """``no``, ``yes`` (declared, none detected) or ``2 (24.0Gi)`` (detected)."""
    if not n.gpus:
        return "yes" if n.gpu else "no"
    return f"{n.gpus}" + ("" if n.gpu_memory is None else f" ({_gib(n.gpu_memory)})")


# ---------------------------------------------------------------------- writing values

SUFFIX = {"json": ".json", "npz": ".npz", "msgpack": ".msgpack"}
DESCRIPTION = {
    "json": "JSON",
    "npz": "numpy .npz (one array per NODE or NODE/KEY)",
    "msgpack": "shoal codec msgpack (arrays as extension types; decode with shoal's codec)",
}


def _jsonable(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, str)):
        return type(v) in (bool, int, str) or v is None
    if isinstance(v, float):
        return type(v) is float and math.isfinite(v)
    if isinstance(v, (list, tuple)):
        return all(_jsonable(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _jsonable(x) for k, x in v.items())
    return False


def _arrays(prefix: str, v: Any, out: dict[str, Any]) -> bool:
    import numpy as np

    if isinstance(v, np.ndarray):
        if v.dtype.hasobject:
            return False
        out[prefix] = v
        return True
    if isinstance(v, (np.generic, int, float)):
        out[prefix] = np.asarray(v)
        return not out[prefix].dtype.hasobject
    if isinstance(v, dict) and v:
        return all(isinstance(k, str) and _arrays(f"{prefix}/{k}", x, out) for k, x in v.items())
    return False


def write_values(values: dict[str, Any], path: Path) -> tuple[Path, str, str | None]:
    """Write ``{name: value}`` to ``path`` in the first format that can hold it.

    JSON if every value is plain JSON data; else ``.npz`` if every value is an array, a
    number, or a (nested) dict of them; else the codec's msgpack bytes. A suffix naming
    a format that can hold the values is kept; otherwise the suffix is replaced.

    Returns
    -------
    tuple
        The path written, the format (``"json"``, ``"npz"``, ``"msgpack"``), and why
        the suffix was changed (or None).
    """
    import numpy as np

    from shoal._codec import encode

    arrays: dict[str, Any] = {}
    possible = []
    if _jsonable(values):
        possible.append("json")
    if values and all(_arrays(str(k), v, arrays) for k, v in values.items()):
        possible.append("npz")
    possible.append("msgpack")
    asked = {s: f for f, s in SUFFIX.items()}.get(path.suffix.lower())
    fmt = asked if asked in possible else possible[0]
    why = None
    if fmt != asked:
        if asked is not None:
            why = f"the values cannot be written as {asked}"
        path = path.with_suffix(SUFFIX[fmt]) if path.suffix else Path(f"{path}{SUFFIX[fmt]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        path.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    elif fmt == "npz":
        with path.open("wb") as f:
            np.savez(f, **arrays)
    else:
        path.write_bytes(encode(values))
    return path, fmt, why


class Running(Protocol):
    """An instance running now (``shoal.simulate(watch=...)`` hands these over)."""

    @property
    def alias(self) -> str: ...
    @property
    def node_id(self) -> str: ...
    @property
    def iteration(self) -> int: ...
    @property
    def age_s(self) -> float: ...
    @property
    def timeout_s(self) -> float | None: ...


def duration(seconds: float) -> str:
    """Seconds as ``42s``, ``3m05s`` or ``1h02m``."""
    s = int(seconds)
    if s < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def running_view(running: Sequence[Running], limit: int = 5) -> RenderableType:
    """The longest-running instances with their node, age and timeout: the ones a user
    looks at when a run seems stuck (the rest are counted, not listed)."""
    if not running:
        return Text("")
    t = Table(
        title=f"running now: {len(running)} instance(s), oldest first",
        title_justify="left",
        show_edge=False,
        box=None,
    )
    for col in ("task", "node", "iteration", "running for", "times out after"):
        t.add_column(col, justify="left" if col in ("task", "node") else "right")
    for r in running[:limit]:
        timeout = "" if r.timeout_s is None else duration(r.timeout_s)
        t.add_row(r.alias, r.node_id, str(r.iteration), duration(r.age_s), timeout)
    if len(running) > limit:
        t.add_row(f"... and {len(running) - limit} more", "", "", "", "")
    return t


class _Age:
    """An :class:`InstanceRecord` as :func:`running_view` shows it (age from now)."""

    def __init__(self, r: InstanceRecord, now: float) -> None:
        self.alias, self.node_id, self.iteration = r.alias, r.node_id, r.iteration
        self.age_s, self.timeout_s = max(0.0, now - r.since), r.timeout_s


def _ages(running: Sequence[InstanceRecord], now: float) -> list[_Age]:
    return sorted((_Age(r, now) for r in running), key=lambda a: -a.age_s)
