"""How the CLI shows values, swarm statuses and nodes, and writes values to files."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

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


def swarms_table(swarms: list[dict[str, Any]]) -> Table:
    """The table of ``shoal status`` without a swarm id."""
    t = Table(show_edge=False)
    for col in ("swarm", "name", "status", "iteration", "created"):
        # Ids are copied from here: never cut or wrapped.
        t.add_column(col, justify="right" if col == "iteration" else "left", no_wrap=True)
    t.add_column("reason", ratio=1)
    for s in swarms:
        t.add_row(
            str(s.get("swarm_id", "")),
            str(s.get("name", "")),
            styled_status(str(s.get("status", ""))),
            str(s.get("iteration", "")),
            when(s.get("created")),
            Text(str(s.get("reason") or "")),
        )
    return t


def progress_line(st: dict[str, Any]) -> str:
    """One line: status, iteration and per-task counts (for a stream that is not a TTY)."""
    parts = []
    for alias, c in (st.get("tasks") or {}).items():
        part = f"{alias} {c.get('succeeded', 0)}/{c.get('scheduled', 0)}"
        if c.get("running"):
            part += f" ({c['running']} running)"
        if c.get("failed"):
            part += f" ({c['failed']} failed)"
        parts.append(part)
    return f"{st.get('status')} iteration {st.get('iteration')}: " + (
        ", ".join(parts) or "no task placed yet"
    )


def status_view(st: dict[str, Any], tracebacks: bool = True) -> RenderableType:
    """One swarm's status: header, per-task counts and every failure with its node."""
    status = str(st.get("status", ""))
    head = Text.assemble(
        ("swarm ", "bold"),
        (str(st.get("swarm_id", "")), "bold"),
        f" ({st.get('name', '')}): ",
        styled_status(status),
        f", iteration {st.get('iteration')}",
    )
    parts: list[RenderableType] = [head]
    more = []
    if st.get("created"):
        more.append(f"created {when(st['created'])}")
    if st.get("reason"):
        more.append(f"reason: {st['reason']}")
    if more:
        parts.append(Text(", ".join(more)))
    tasks = st.get("tasks") or {}
    if tasks:
        t = Table(show_edge=False, title=None)
        for col in ("task", "scheduled", "running", "succeeded", "failed"):
            t.add_column(col, justify="left" if col == "task" else "right")
        for alias, c in tasks.items():
            failed = int(c.get("failed", 0) or 0)
            t.add_row(
                alias,
                str(c.get("scheduled", 0)),
                str(c.get("running", 0)),
                str(c.get("succeeded", 0)),
                Text(str(failed), style="red" if failed else ""),
            )
        parts.append(t)
    for f in st.get("failures") or []:
        parts.append(
            Text.assemble(
                ("failed ", "bold red"),
                f"{f.get('alias')} on node {f.get('node_id')} (iteration {f.get('iteration')}, "
                f"attempt {f.get('attempt')}, {f.get('kind')}): {f.get('error')}",
            )
        )
        if tracebacks and f.get("traceback"):
            # Never folded: paths and code lines stay whole (and clickable).
            parts.append(Text(str(f["traceback"]).rstrip(), no_wrap=True, overflow="ignore"))
    return Group(*parts)


def nodes_table(nodes: list[dict[str, Any]]) -> Table:
    """The table of ``shoal nodes``."""
    t = Table(show_edge=False)
    for col in ("node", "connected", "datasets", "gpu", "images", "last seen", "running"):
        t.add_column(col, justify="right" if col == "running" else "left", no_wrap=col == "node")
    for n in nodes:
        images = n.get("images")
        t.add_row(
            str(n.get("node_id", "")),
            Text("yes", style="green") if n.get("connected") else Text("no", style="red"),
            ", ".join(n.get("datasets") or []),
            "yes" if n.get("gpu") else "no",
            "any" if images is None else ", ".join(images),
            ago(n.get("last_seen")),
            str(n.get("running", "")),
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
