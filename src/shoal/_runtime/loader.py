"""Import a module bundle once per process and run its ``main()`` as an instance."""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
import re
import shutil
import sys
import traceback
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType, TracebackType

from shoal._errors import ShoalError
from shoal._runtime import ops
from shoal._runtime.context import Channel, InstanceContext, running

_SHOAL_DIR = str(Path(__file__).resolve().parent.parent)


#: Bounds on what a node unpacks from one module bundle (a zip). shoal's own bundles
#: are stored uncompressed (1:1) and hold code, so real modules stay far below them;
#: they stop a zip bomb (a small download that expands to fill the disk).
MAX_BUNDLE_BYTES = 1 << 30  # 1 GiB uncompressed, every entry together
MAX_BUNDLE_ENTRIES = 100_000
MAX_BUNDLE_RATIO = 200  # uncompressed / compressed size of one entry ...
RATIO_FROM_BYTES = 1 << 20  # ... checked for entries over 1 MiB uncompressed
_CHUNK = 1 << 20
# What a damaged or hand-made zip raises while it is read (a full disk is not one).
_DAMAGED = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,  # an unknown compression method
    RuntimeError,  # an encrypted entry
    ValueError,
    FileExistsError,  # two entries with one name
    IsADirectoryError,
    NotADirectoryError,
)
_BOMB_HINT = (
    "shoal bundles are stored uncompressed and hold a module's code; keep data in the "
    "nodes' datasets, and build bundles with `shoal export` or shoal.Client"
)


def _bytes(n: int) -> str:
    return f"{n} bytes ({n / (1 << 20):g} MiB)"


def _too_big(digest: str, what: str, limit: str) -> ShoalError:
    return ShoalError(
        f"bundle {digest} {what}, over the limit of {limit}; it was not extracted",
        code="module.bundle_limit",
        hint=_BOMB_HINT,
    )


def check_bundle_zip(
    zf: zipfile.ZipFile,
    digest: str,
    max_bytes: int = MAX_BUNDLE_BYTES,
    max_ratio: float = MAX_BUNDLE_RATIO,
) -> None:
    """Check a bundle's central directory before anything is extracted.

    Parameters
    ----------
    zf
        The open bundle.
    digest
        Its digest, for the messages.
    max_bytes, max_ratio
        The bounds on the total uncompressed size and on the compression ratio of
        each entry over :data:`RATIO_FROM_BYTES`.

    Raises
    ------
    ShoalError
        ``module.bundle`` for an entry whose name leaves the bundle's folder,
        ``module.bundle_limit`` for a bundle over a bound.
    """
    infos = zf.infolist()
    if len(infos) > MAX_BUNDLE_ENTRIES:
        raise _too_big(digest, f"has {len(infos)} entries", f"{MAX_BUNDLE_ENTRIES} entries")
    total = 0
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        if not name or name.startswith("/") or ".." in parts or "\\" in name or "\0" in name:
            raise ShoalError(f"bundle {digest} has an unsafe entry {name!r}", code="module.bundle")
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FROM_BYTES and ratio > max_ratio:
            raise _too_big(
                digest,
                f"has an entry {name!r} that expands {ratio:.0f} times "
                f"({info.compress_size} -> {info.file_size} bytes)",
                f"{max_ratio:g}:1 for entries over {RATIO_FROM_BYTES} bytes",
            )
    if total > max_bytes:
        raise _too_big(digest, f"expands to {total} bytes", _bytes(max_bytes))


def _extract(zf: zipfile.ZipFile, digest: str, folder: Path, max_bytes: int) -> None:
    """Write every entry under ``folder``, counting what is written (headers can lie)."""
    written = 0
    for info in zf.infolist():
        path = folder.joinpath(*PurePosixPath(info.filename).parts)
        if info.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = 0
        with zf.open(info) as src, path.open("xb") as dst:
            while chunk := src.read(_CHUNK):
                entry += len(chunk)
                written += len(chunk)
                if entry > info.file_size or written > max_bytes:
                    raise _too_big(
                        digest,
                        f"expands past its declared sizes ({written} bytes)",
                        _bytes(max_bytes),
                    )
                dst.write(chunk)


def extract_bundle(
    data: bytes,
    digest: str,
    cache: Path,
    *,
    max_bytes: int = MAX_BUNDLE_BYTES,
    max_ratio: float = MAX_BUNDLE_RATIO,
) -> Path:
    """Extract a bundle into ``cache/<hex>/`` once (atomically) and return that folder.

    The zip's central directory is checked first (entry names, total size, compression
    ratio: :func:`check_bundle_zip`), and the bytes are counted again while they are
    written, so a bundle never writes more than ``max_bytes``. A refused bundle leaves
    nothing behind.

    Raises
    ------
    ShoalError
        ``module.bundle`` for a bundle that is not a readable zip or has an unsafe
        entry, ``module.bundle_limit`` for one over a bound.
    """
    target = cache / digest.removeprefix("sha256:")
    if target.is_dir():
        return target
    tmp = cache / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            check_bundle_zip(zf, digest, max_bytes, max_ratio)
            tmp.mkdir(parents=True)
            _extract(zf, digest, tmp, max_bytes)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, _DAMAGED):
            raise ShoalError(
                f"bundle {digest} cannot be extracted: {type(e).__name__}: {e}",
                code="module.bundle",
                hint="the bundle is damaged or was not built by shoal; build it with "
                "`shoal export` or shoal.Client",
            ) from None
        raise
    try:
        os.rename(tmp, target)
    except OSError:  # another process won the race: its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass
class _Loaded:
    entry: str
    folder: Path
    modules: dict[str, ModuleType]
    main: Callable[[], object]


class ModuleCache:
    """Imports each bundle once; several bundles may share an entry name."""

    def __init__(self) -> None:
        self._loaded: dict[str, _Loaded] = {}
        self._active: str | None = None

    def main_of(self, digest: str, folder: Path) -> Callable[[], object]:
        """The ``main`` of the bundle extracted in ``folder``, imported once."""
        loaded = self._loaded.get(digest)
        if loaded is None:
            loaded = self._import(digest, folder)
            self._loaded[digest] = loaded
        elif self._active != digest:
            self._swap_in(loaded)
        self._active = digest
        return loaded.main

    @staticmethod
    def _owned(entry: str) -> list[str]:
        return [n for n in sys.modules if n == entry or n.startswith(entry + ".")]

    def _swap_in(self, loaded: _Loaded) -> None:
        for name in self._owned(loaded.entry):
            del sys.modules[name]
        sys.modules.update(loaded.modules)

    def _import(self, digest: str, folder: Path) -> _Loaded:
        manifest = read_manifest_dir(folder)
        entry = import_name(manifest["entry"])
        for name in self._owned(entry):  # another bundle's module of the same name
            del sys.modules[name]
        sys.path.insert(0, str(folder))
        try:
            if entry == manifest["entry"]:
                module = importlib.import_module(entry)
            else:
                module = _import_by_path(entry, folder, manifest)
        finally:
            sys.path.remove(str(folder))
        main = getattr(module, "main", None)
        if not callable(main):
            raise ShoalError(
                f"module {entry!r} ({digest[:19]}) has no main()",
                code="module.main",
                hint="define def main(): in the module",
            )
        modules = {n: sys.modules[n] for n in self._owned(entry)}
        return _Loaded(entry, folder, modules, main)


def import_name(entry: str) -> str:
    """The name a bundle's entry point is imported under.

    A file or folder name is not always a Python identifier: ``worker_v1.0.py`` (seed
    001's versioning section) would be imported as ``worker_v1`` then ``0``. Such an
    entry is imported under a name made of its identifier characters (``worker_v1_0``),
    from its own path, so bundles (and their digests) stay what they were.
    """
    if entry.isidentifier():
        return entry
    name = re.sub(r"\W", "_", entry)
    return name if name.isidentifier() else f"_{name}"


def _import_by_path(name: str, folder: Path, manifest: dict[str, str]) -> ModuleType:
    """Import a bundle's entry point whose name is not an identifier, as ``name``."""
    entry = manifest["entry"]
    package = manifest.get("kind") == "package"
    path = folder / entry / "__init__.py" if package else folder / f"{entry}.py"
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if package else None
    )
    if spec is None or spec.loader is None:  # pragma: no cover (a .py path always has one)
        raise ShoalError(f"cannot import {path}", code="module.main")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def read_manifest_dir(folder: Path) -> dict[str, str]:
    """The manifest of an extracted bundle."""
    import json

    manifest: dict[str, str] = json.loads((folder / "shoal-module.json").read_text())
    return manifest


@dataclass(frozen=True)
class Outcome:
    """How an instance's ``main()`` ended."""

    ok: bool
    error: str = ""
    traceback: str = ""


def in_bundle_terms(outcome: Outcome, folder: Path, module: str) -> Outcome:
    """The outcome with paths in the module's extracted copy shown as ``<module>/<path
    in the bundle>`` (``module`` is the bundle's digest).

    The copy's path (``.shoal/runs/<ts>/modules/<hex>/worker.py``, a node's cache) means
    nothing to the user; the digest form is the same on every machine, and the driver
    that receives it names the module as the user knows it (:func:`user_paths`).
    """
    if outcome.ok:
        return outcome
    prefix = str(folder) + os.sep
    shown = module + "/"
    return Outcome(
        False, outcome.error.replace(prefix, shown), outcome.traceback.replace(prefix, shown)
    )


def user_paths(text: str, labels: Mapping[str, str]) -> str:
    """``text`` with each ``<digest>/`` written by :func:`in_bundle_terms` replaced by
    ``labels[digest] + "/"``: the module's source folder on this machine (the
    simulator), or ``name@version`` (a coordinator, whose users' files are elsewhere)."""
    if "sha256:" not in text:
        return text
    for digest, label in labels.items():
        text = text.replace(digest + "/", label.rstrip("/") + "/")
    return text


def _user_tb(tb: TracebackType | None) -> TracebackType | None:
    # Drop shoal's own frames above the user's code so tracebacks start at main().
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_SHOAL_DIR):
        if tb.tb_next is None:
            break
        tb = tb.tb_next
    return tb


_IMPORTLIB_DIR = os.path.dirname(importlib.__file__)


def _import_tb(tb: TracebackType | None) -> TracebackType | None:
    # An import error starts in the user's module: drop shoal's and importlib's frames.
    def ours(t: TracebackType) -> bool:
        name = t.tb_frame.f_code.co_filename
        return name.startswith((_SHOAL_DIR, _IMPORTLIB_DIR, "<frozen importlib"))

    while tb is not None and tb.tb_next is not None and ours(tb):
        tb = tb.tb_next
    return tb


def run_main(main: Callable[[], object], ctx: InstanceContext) -> Outcome:
    """Run ``main()`` as instance ``ctx`` and report how it ended."""
    try:
        with running(ctx):
            main()
    except BaseException as e:  # the task's failure is data here, not our crash
        if isinstance(e, KeyboardInterrupt):
            raise
        text = "".join(traceback.format_exception(type(e), e, _user_tb(e.__traceback__)))
        return Outcome(False, f"{type(e).__name__}: {e}", text)
    return Outcome(True)


class LogStream(io.TextIOBase):
    """Sends what task code prints to its logs, one line at a time."""

    def __init__(self, channel: Channel, level: str) -> None:
        self._channel = channel
        self._level = level
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            ops.LOG.send(self._channel, {"level": self._level, "message": line})
        return len(s)

    def flush(self) -> None:
        if self._buf:
            ops.LOG.send(self._channel, {"level": self._level, "message": self._buf})
            self._buf = ""


def run_instance(
    cache: ModuleCache, module: str, folder: Path, ctx: InstanceContext, capture: bool
) -> Outcome:
    """Import ``module`` (once per cache) and run its ``main()`` as instance ``ctx``.

    An import error is the task's failure, with its traceback. With ``capture``, what the
    task prints goes to its logs (stdout at info, stderr at warning); without it (the
    inline executor) prints stay on the terminal, next to a debugger.
    """
    streams = (LogStream(ctx.channel, "info"), LogStream(ctx.channel, "warning"))
    real = sys.stdout, sys.stderr
    if capture:
        sys.stdout, sys.stderr = streams
    try:
        try:
            main = cache.main_of(module, folder)
        except Exception as e:
            outcome = Outcome(
                False,
                f"importing the module failed: {type(e).__name__}: {e}",
                "".join(traceback.format_exception(type(e), e, _import_tb(e.__traceback__))),
            )
        else:
            outcome = run_main(main, ctx)
        return in_bundle_terms(outcome, folder, module)
    finally:
        if capture:
            for stream in streams:
                stream.flush()
            sys.stdout, sys.stderr = real
