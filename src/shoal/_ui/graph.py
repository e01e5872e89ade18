"""A swarm's task graph as SVG, drawn on the server (readable without JavaScript).

Tasks are placed in columns by their depth (the longest path from a source), edges
are straight arrows from left to right; each box names the task, its module (and the
module's version when the plan has one) and its instance counts.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from shoal._plan import Plan

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 190, 58, 70, 24, 12


def depths(plan: Plan) -> dict[str, int]:
    """Each task's column: the longest path to it from a task with no upstream."""
    ups: dict[str, list[str]] = {t.alias: [] for t in plan.tasks}
    for a, b in plan.edges:
        ups.setdefault(b, []).append(a)
    out: dict[str, int] = {}

    def depth(alias: str, seen: frozenset[str]) -> int:
        if alias in out:
            return out[alias]
        if alias in seen:  # a plan is acyclic; never loop on a bad one
            return 0
        d = max((depth(u, seen | {alias}) + 1 for u in ups.get(alias, [])), default=0)
        out[alias] = d
        return d

    for t in plan.tasks:
        depth(t.alias, frozenset())
    return out


def module_label(plan: Plan, alias: str) -> str:
    """``name`` or ``name version`` of the task's module (the plan's ``version`` field)."""
    spec = next(t for t in plan.tasks if t.alias == alias)
    ref = plan.modules.get(spec.module)
    if ref is None:
        return spec.module
    version = getattr(ref, "version", None)
    return f"{ref.name} {version}" if version else ref.name


def svg(plan: Plan, counts: dict[str, tuple[int, int, int]] | None = None) -> Markup:
    """The graph; ``counts``: alias -> (succeeded, failed, scheduled) to print in boxes."""
    col = depths(plan)
    columns: dict[int, list[str]] = {}
    for t in plan.tasks:
        columns.setdefault(col[t.alias], []).append(t.alias)
    pos: dict[str, tuple[int, int]] = {}
    for c, aliases in columns.items():
        for r, alias in enumerate(aliases):
            pos[alias] = (PAD + c * (BOX_W + GAP_X), PAD + r * (BOX_H + GAP_Y))
    width = PAD * 2 + (max(columns, default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    rows = max((len(a) for a in columns.values()), default=1)
    height = PAD * 2 + rows * (BOX_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg class="graph" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>task graph of {escape(plan.name)}: {len(plan.tasks)} tasks, "
        f"{len(plan.edges)} edges</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead"/></marker></defs>',
    ]
    for a, b in plan.edges:
        if a in pos and b in pos:
            (x1, y1), (x2, y2) = pos[a], pos[b]
            parts.append(
                f'<line class="edge" x1="{x1 + BOX_W}" y1="{y1 + BOX_H // 2}" '
                f'x2="{x2}" y2="{y2 + BOX_H // 2}" marker-end="url(#arrow)">'
                f"<title>{escape(a)} → {escape(b)}</title></line>"
            )
    for t in plan.tasks:
        x, y = pos[t.alias]
        ok, bad, total = (counts or {}).get(t.alias, (0, 0, 0))
        state = "failed" if bad else ("done" if total and ok == total else "idle")
        parts.append(
            f'<g class="task {state}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" '
            f'rx="6"/><text x="{x + 10}" y="{y + 20}" class="alias">{escape(t.alias)}</text>'
            f'<text x="{x + 10}" y="{y + 36}" class="module">'
            f"{escape(module_label(plan, t.alias))}</text>"
            f'<text x="{x + 10}" y="{y + 51}" class="counts">{ok} ok · {bad} failed · '
            f"{total} placed</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def task_counts(plan: Plan, instances: list[tuple[str, str]]) -> dict[str, tuple[int, int, int]]:
    """alias -> (succeeded, failed, placed) from ``(alias, state)`` pairs."""
    out: dict[str, tuple[int, int, int]] = {}
    for t in plan.tasks:
        states = [s for a, s in instances if a == t.alias]
        out[t.alias] = (states.count("succeeded"), states.count("failed"), len(states))
    return out
