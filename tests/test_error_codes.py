"""Every error code shoal gives is in one registry (``shoal._codes.CODES``), every
registered code is still given somewhere, and docs/errors.md lists them all.

The source is read with :mod:`ast`, not imported. A code is *given* where:

- a call passes ``code=<literal>`` (``ShoalError(..., code="plan.json")``), or passes a
  literal in the position of a parameter named ``code`` (``Problem("graph.cycle", ...)``,
  ``_json_error(413, "request.too_large", ...)``);
- a parameter named ``code`` has a literal default (``code: str = "api"``);
- a literal is assigned to ``code`` or ``<x>.code`` (class attributes included), or is
  the value of a ``"code"`` key in a dict display (error payloads);
- a literal is compared with ``code`` or ``<x>.code`` (a code read back).

Literals are strings and f-strings, also inside ``a or b`` and ``a if c else b``. An
f-string ``f"{what}.unknown"`` whose placeholder is a parameter of its function is
resolved at that function's call sites (``not_found("swarm", ...)`` gives
``swarm.unknown``); any f-string must also match a registered code or family, where a
family is a registered code with a ``<placeholder>`` part (``http.<status>``).
"""

from __future__ import annotations

import ast
import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from helpers import ROOT, load_file

from shoal._codes import CODES

SRC = ROOT / "src" / "shoal"
DOC = ROOT / "docs" / "errors.md"
TOOL = ROOT / "tools" / "errors_doc.py"


@dataclass(frozen=True)
class Given:
    """One place a code is given: ``code`` is exact, or a glob if ``template``."""

    where: str
    code: str
    template: bool = False


@dataclass
class Function:
    """What the scan needs of a function (or a class, for its constructor)."""

    params: list[str]  # positional parameters, as a caller passes them
    defaults: dict[str, ast.expr] = field(default_factory=dict)


def _literals(expr: ast.expr | None) -> Iterator[tuple[ast.expr, str, bool]]:
    """``(node, text, is_template)`` of each string literal ``expr`` may evaluate to."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        yield expr, expr.value, False
    elif isinstance(expr, ast.JoinedStr):
        parts = [
            re.sub(r"([*?\[])", r"[\1]", str(v.value)) if isinstance(v, ast.Constant) else "*"
            for v in expr.values
        ]
        yield expr, "".join(parts), True
    elif isinstance(expr, ast.BoolOp):
        for value in expr.values:
            yield from _literals(value)
    elif isinstance(expr, ast.IfExp):
        yield from _literals(expr.body)
        yield from _literals(expr.orelse)
    elif isinstance(expr, (ast.Tuple, ast.List, ast.Set)):  # `code in ("a", "b")`
        for item in expr.elts:
            yield from _literals(item)


def _defaults(args: ast.arguments) -> dict[str, ast.expr]:
    """Each parameter's default expression, by parameter name."""
    positional = [*args.posonlyargs, *args.args]
    with_default = positional[len(positional) - len(args.defaults) :]
    pairs = list(zip(with_default, args.defaults, strict=True))
    pairs += [(p, d) for p, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d]
    return {p.arg: d for p, d in pairs}


def _function(node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> Function:
    positional = [p.arg for p in [*node.args.posonlyargs, *node.args.args]]
    if method and positional and positional[0] in ("self", "cls"):
        positional = positional[1:]
    return Function(positional, _defaults(node.args))


def _named_code(expr: ast.expr) -> bool:
    return (isinstance(expr, ast.Name) and expr.id == "code") or (
        isinstance(expr, ast.Attribute) and expr.attr == "code"
    )


def _callee(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


class Scan:
    """Every code given under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.trees = {p: ast.parse(p.read_text(), str(p)) for p in sorted(root.rglob("*.py"))}
        self.functions: dict[str, list[Function]] = {}
        for tree in self.trees.values():
            self._signatures(tree)
        self.given: list[Given] = []
        for path, tree in self.trees.items():
            self._scan(path, tree)

    # ------------------------------------------------------------------ signatures
    def _signatures(self, tree: ast.Module) -> None:
        methods: set[ast.AST] = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    methods.add(item)
                    if item.name == "__init__":  # what `Class(...)` calls
                        self.functions.setdefault(node.name, []).append(_function(item, True))
            if any("dataclass" in ast.unparse(d) for d in node.decorator_list):
                fields = [
                    i.target.id
                    for i in node.body
                    if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)
                ]
                self.functions.setdefault(node.name, []).append(Function(fields))
        for node in ast.walk(tree):
            is_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            if is_function and node.name != "__init__":  # super().__init__(...): unknown
                self.functions.setdefault(node.name, []).append(_function(node, node in methods))

    def _arguments(self, call: ast.Call, name: str) -> Iterator[ast.expr]:
        """The expressions ``call`` passes for parameter ``name`` of its callee."""
        yield from (k.value for k in call.keywords if k.arg == name)
        for fn in self.functions.get(_callee(call) or "", []):
            if name in fn.params and fn.params.index(name) < len(call.args):
                arg = call.args[fn.params.index(name)]
                if not isinstance(arg, ast.Starred):
                    yield arg

    # ------------------------------------------------------------------------ sites
    def _scan(self, path: Path, tree: ast.Module) -> None:
        where = str(path.relative_to(self.root.parent.parent))
        scopes: list[ast.FunctionDef | ast.AsyncFunctionDef] = []

        def give(expr: ast.expr | None) -> None:
            for node, text, template in _literals(expr):
                site = f"{where}:{node.lineno}"
                self.given.append(Given(site, text, template))
                if template and scopes and isinstance(node, ast.JoinedStr):
                    self._resolve(site, node, scopes[-1])

        def visit(node: ast.AST) -> None:
            is_scope = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            if is_scope:
                scopes.append(node)
                give(_defaults(node.args).get("code"))
            if isinstance(node, ast.Call):
                for arg in self._arguments(node, "code"):
                    give(arg)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if _named_code(target):
                        give(node.value)
                    elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        for t, v in zip(target.elts, node.value.elts, strict=False):
                            if _named_code(t):
                                give(v)
            elif isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value == "code":
                        give(v)
            elif isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(_named_code(s) for s in sides):
                    for side in sides:
                        give(side)
            for child in ast.iter_child_nodes(node):
                visit(child)
            if is_scope:
                scopes.pop()

        visit(tree)

    def _resolve(
        self, site: str, fstring: ast.JoinedStr, fn: ast.FunctionDef | ast.AsyncFunctionDef
    ) -> None:
        """Give the codes an f-string makes at the call sites of its function."""
        holes = [v.value for v in fstring.values if isinstance(v, ast.FormattedValue)]
        if len(holes) != 1 or not isinstance(holes[0], ast.Name):
            return
        param, prefix, suffix = holes[0].id, *_around(fstring)
        if param not in {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}:
            return
        for value, where in self._values_of(fn.name, param, depth=3):
            self.given.append(Given(f"{where} (via {site})", f"{prefix}{value}{suffix}"))

    def _values_of(self, function: str, param: str, depth: int) -> Iterator[tuple[str, str]]:
        """``(literal, file:line)`` of each literal passed for ``param`` of ``function``
        anywhere: as an argument, as the parameter's default, or as the default or
        argument of a caller's parameter passed on (``depth`` calls up)."""
        for path, tree in self.trees.items():
            where = str(path.relative_to(self.root.parent.parent))
            for node in ast.walk(tree):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                if node.name == function:
                    for lit, text, template in _literals(_defaults(node.args).get(param)):
                        if not template:
                            yield text, f"{where}:{lit.lineno}"
                for call in ast.walk(node):
                    if not (isinstance(call, ast.Call) and _callee(call) == function):
                        continue
                    for arg in self._arguments(call, param):
                        for lit, text, template in _literals(arg):
                            if not template:
                                yield text, f"{where}:{lit.lineno}"
                        if isinstance(arg, ast.Name) and depth > 0:
                            yield from self._values_of(node.name, arg.id, depth - 1)


def _around(fstring: ast.JoinedStr) -> tuple[str, str]:
    """The constant text before and after the one placeholder of ``fstring``."""
    values = fstring.values
    hole = next(i for i, v in enumerate(values) if isinstance(v, ast.FormattedValue))
    text = [str(v.value) if isinstance(v, ast.Constant) else "" for v in values]
    return "".join(text[:hole]), "".join(text[hole + 1 :])


def _family(code: str) -> str:
    """A registered code as a glob: ``http.<status>`` -> ``http.*``."""
    return re.sub(r"<[^>]*>", "*", code)


def _registered(given: Given) -> bool:
    if given.template:
        return any(fnmatch.fnmatchcase(c, given.code) for c in CODES)
    return given.code in CODES or any(
        "<" in c and fnmatch.fnmatchcase(given.code, _family(c)) for c in CODES
    )


def _used(code: str, given: list[Given]) -> bool:
    return any(
        (fnmatch.fnmatchcase(code, g.code) if g.template else g.code == code)
        or ("<" in code and fnmatch.fnmatchcase(g.code, _family(code)))
        for g in given
    )


SCAN = Scan(SRC)


def test_the_scan_finds_codes_in_each_way_they_are_given() -> None:
    found = {(g.code, g.template) for g in SCAN.given}
    assert ("plan.version", False) in found  # code="..."
    assert ("graph.cycle", False) in found  # Problem("graph.cycle", ...): positional
    assert ("request.too_large", False) in found  # _json_error(413, "...", ...)
    assert ("api", False) in found  # ApiError(..., code: str = "api")
    assert ("swarm.invalid", False) in found  # class attribute
    assert ("internal", False) in found  # {"code": "internal", ...}
    assert ("remote", False) in found  # code=err.get("code") or "remote"
    assert ("blob.digest", False) in found  # e.code == "blob.digest"
    assert ("http.*", True) in found  # f"http.{status}"
    assert ("swarm.unknown", False) in found  # not_found("swarm", ...) -> f"{what}.unknown"
    assert ("blob.unknown", False) in found  # file_of(..., what="blob") -> not_found(what)
    assert len({g.code for g in SCAN.given if not g.template}) >= 90


def test_every_code_given_is_registered() -> None:
    missing = [f"{g.where}: {g.code!r}" for g in SCAN.given if not _registered(g)]
    assert not missing, (
        "codes not in shoal._codes.CODES (add each with a one-line meaning, then run "
        "`python tools/errors_doc.py --write`):\n  " + "\n  ".join(missing)
    )


def test_every_registered_code_is_still_given() -> None:
    unused = [c for c in CODES if not _used(c, SCAN.given)]
    assert not unused, f"registered in shoal._codes.CODES but given nowhere: {unused}"


def test_every_meaning_is_one_line() -> None:
    for code, meaning in CODES.items():
        assert re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_<>]+)*", code), code
        assert meaning and "\n" not in meaning and meaning == meaning.strip(), code
    assert list(CODES) == sorted(CODES), "keep shoal._codes.CODES sorted by code"


def test_docs_errors_md_is_up_to_date() -> None:
    expected = load_file(TOOL).render()
    assert DOC.read_text(encoding="utf-8") == expected, (
        "docs/errors.md is out of date: run `python tools/errors_doc.py --write`"
    )
