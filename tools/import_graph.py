"""Print shoal's package import graph and any cycles in it.

Usage: ``python tools/import_graph.py [--src src/shoal]``

A "package" is a first-level entry under ``src/shoal`` (``_engine``, ``_sim``,
``_bundle`` ...). Every ``import`` and ``from ... import`` in the tree, resolved
against the importing file (relative imports included), becomes an edge between the
two packages. Imports inside ``if TYPE_CHECKING:`` count too: a type is a dependency.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path


def package_of(module: str) -> str | None:
    """``shoal._sim.driver`` -> ``_sim``; ``shoal`` -> ``shoal``; else None."""
    parts = module.split(".")
    if parts[0] != "shoal":
        return None
    return parts[1] if len(parts) > 1 else "shoal"


def module_name(src: Path, path: Path) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(src: Path, path: Path) -> list[tuple[str, int]]:
    """Every shoal module ``path`` imports, as (dotted name, line)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(src, path)
    is_pkg = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from shoal import _sim` imports the package `_sim`; `from shoal import
            # Swarm` imports `shoal` itself (see package_edges).
            found += [(f"{mod}.{a.name}", node.lineno) for a in node.names]
    return [(m, ln) for m, ln in found if m.split(".")[0] == "shoal"]


def package_edges(src: Path) -> dict[str, dict[str, list[str]]]:
    """{from_package: {to_package: ["file:line", ...]}} for every cross-package import."""
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(src.rglob("*.py")):
        me = package_of(module_name(src, path))
        assert me is not None
        for mod, line in imports_of(src, path):
            other = package_of(mod)
            if other is None or other == me:
                continue
            # `from shoal import X` where X is not a package is an import of `shoal`.
            if other not in {p.stem for p in src.iterdir()} and other != "shoal":
                other = "shoal"
                if other == me:
                    continue
            where = f"{path.relative_to(src.parent.parent)}:{line}"
            if where not in edges[me][other]:
                edges[me][other].append(where)
    return edges


def cycles(edges: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    nodes = set(edges) | {b for a in edges.values() for b in a}

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(Path(__file__).resolve().parent.parent / "src/shoal"))
    ap.add_argument("--where", action="store_true", help="print the file:line of each edge")
    args = ap.parse_args()
    src = Path(args.src)
    edges = package_edges(src)
    for a in sorted(edges):
        print(f"{a} -> {', '.join(sorted(edges[a]))}")
        if args.where:
            for b in sorted(edges[a]):
                print(f"    {b}: {' '.join(edges[a][b][:4])}")
    cyc = cycles(edges)
    print()
    if cyc:
        for c in cyc:
            print("cycle:", " <-> ".join(c))
    else:
        print("no package cycle")
    return 1 if cyc else 0


if __name__ == "__main__":
    raise SystemExit(main())
