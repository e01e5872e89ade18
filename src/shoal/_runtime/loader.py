"""Import a module bundle once per process and run its ``main()`` as an instance."""

from __future__ import annotations

import importlib
import io
import os
import shutil
import sys
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType

from shoal._errors import ShoalError
from shoal._runtime import ops
from shoal._runtime.context import Channel, InstanceContext, running

_SHOAL_DIR = str(Path(__file__).resolve().parent.parent)


def extract_bundle(data: bytes, digest: str, cache: Path) -> Path:
    """Extract a bundle into ``cache/<hex>/`` once (atomically) and return that folder."""
    target = cache / digest.removeprefix("sha256:")
    if target.is_dir():
        return target
    tmp = cache / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            if name.startswith("/") or ".." in Path(name).parts:
                raise ShoalError(
                    f"bundle {digest} has an unsafe entry {name!r}", code="module.bundle"
                )
        zf.extractall(tmp)
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
        entry = read_manifest_dir(folder)["entry"]
        for name in self._owned(entry):  # another bundle's module of the same name
            del sys.modules[name]
        sys.path.insert(0, str(folder))
        try:
            module = importlib.import_module(entry)
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


def _user_tb(tb: TracebackType | None) -> TracebackType | None:
    # Drop shoal's own frames above the user's code so tracebacks start at main().
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_SHOAL_DIR):
        if tb.tb_next is None:
            break
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
            return Outcome(
                False,
                f"importing the module failed: {type(e).__name__}: {e}",
                traceback.format_exc(),
            )
        return run_main(main, ctx)
    finally:
        if capture:
            for stream in streams:
                stream.flush()
            sys.stdout, sys.stderr = real
