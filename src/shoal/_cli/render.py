"""How the CLI shows values, swarm statuses and nodes, and writes values to files."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from shoal._api.records import NodeRecord, SwarmStatus, SwarmSummary

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
    for col in ("node", "connected", "datasets", "gpu", "images", "last seen", "running"):
        t.add_column(col, justify="right" if col == "running" else "left", no_wrap=col == "node")
    for n in nodes:
        t.add_row(
            n.node_id,
            Text("yes", style="green") if n.connected else Text("no", style="red"),
            ", ".join(n.datasets),
            "yes" if n.gpu else "no",
            "any" if n.images is None else ", ".join(n.images),
            ago(n.last_seen),
            str(n.running),
        )
    return t


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
