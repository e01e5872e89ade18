"""The layering of docs/architecture.md, enforced on every import under src/shoal."""

from __future__ import annotations

import importlib.util
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "_shoal_import_graph", ROOT / "tools/import_graph.py"
)
assert _spec and _spec.loader
graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graph)

SRC = ROOT / "src" / "shoal"
DOC = ROOT / "docs" / "architecture.md"


def read_table(doc: Path) -> dict[str, set[str]]:
    """{package: packages it may import} from the doc's table."""
    allowed: dict[str, set[str]] = {}
    for line in doc.read_text().splitlines():
        m = re.match(r"^\| `([\w]+)` \|[^|]*\| (.*) \|$", line)
        if m:
            allowed[m.group(1)] = set(re.findall(r"`([\w]+)`", m.group(2)))
    return allowed


def violations(src: Path, allowed: dict[str, set[str]]) -> list[str]:
    """Every import that breaks the table, and every package without a row."""
    problems = []
    packages = {p.stem for p in src.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    packages = {"shoal" if p == "__init__" else p for p in packages}
    for p in sorted(packages - set(allowed)):
        problems.append(f"package {p} has no row in docs/architecture.md: add it first")
    edges = graph.package_edges(src)
    for a, targets in sorted(edges.items()):
        for b, where in sorted(targets.items()):
            if b not in allowed.get(a, set()):
                problems.append(f"{a} may not import {b}: {', '.join(where)}")
    return problems


def test_the_table_names_real_packages_only() -> None:
    allowed = read_table(DOC)
    assert len(allowed) > 20, "the table in docs/architecture.md was not parsed"
    known = set(allowed)
    for pkg, deps in allowed.items():
        assert deps <= known, f"{pkg}'s row names unknown packages {sorted(deps - known)}"


def test_every_import_in_src_follows_the_layering() -> None:
    problems = violations(SRC, read_table(DOC))
    assert not problems, "\n".join(problems)


def test_no_package_cycle() -> None:
    assert graph.cycles(graph.package_edges(SRC)) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "shoal"
    for name, text in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return src


ALLOWED = {"shoal": {"_engine"}, "_engine": {"_plan"}, "_plan": set(), "_sim": {"_engine"}}


def test_a_forbidden_import_is_caught(tmp_path: Path) -> None:
    """The checker itself: the engine importing the simulator is flagged, with its line."""
    src = _tree(
        tmp_path,
        {
            "__init__.py": "from shoal._engine import x\n",
            "_plan/__init__.py": "",
            "_sim/__init__.py": "from shoal._engine import core\n",
            "_engine/__init__.py": "x = 1\n",
            "_engine/core.py": """\
                from shoal._plan import Plan
                def f():
                    from shoal._sim import driver  # the violation
            """,
        },
    )
    problems = violations(src, ALLOWED)
    assert len(problems) == 1, problems
    assert problems[0].startswith("_engine may not import _sim: ")
    assert problems[0].endswith("shoal/_engine/core.py:3")


@pytest.mark.parametrize(
    "line",
    [
        "from .._sim import driver",  # relative
        "import shoal._sim.driver",
        "from shoal import _sim",
    ],
)
def test_every_import_form_is_seen(tmp_path: Path, line: str) -> None:
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "_plan/__init__.py": "",
            "_sim/__init__.py": "",
            "_engine/__init__.py": "",
            "_engine/core.py": line + "\n",
        },
    )
    problems = violations(src, ALLOWED)
    assert len(problems) == 1 and problems[0].startswith("_engine may not import _sim"), problems


def test_a_package_without_a_row_is_caught(tmp_path: Path) -> None:
    src = _tree(tmp_path, {"__init__.py": "", "_plan/__init__.py": "", "_new/__init__.py": ""})
    assert violations(src, ALLOWED) == [
        "package _new has no row in docs/architecture.md: add it first"
    ]


def test_a_cycle_is_caught(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "_plan/__init__.py": "from shoal._engine import x\n",
            "_engine/__init__.py": "from shoal._plan import y\n",
        },
    )
    assert graph.cycles(graph.package_edges(src)) == [["_engine", "_plan"]]
