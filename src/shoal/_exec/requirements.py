"""Whether an image satisfies a module's ``requirements`` (seed 002's
``requirements=["numpy"]``, seed 001's ``requirements.txt`` in a module folder).

The node asks the image's own interpreter for its installed distributions
(``importlib.metadata``, once per image and interpreter file: cached by path, size and
modification time) and checks each requirement against them with ``packaging`` (PEP 440
versions, PEP 508 markers evaluated for that interpreter). A task whose image lacks one
is refused before it starts, naming every missing or mismatched distribution. Nothing
is installed unless the node's owner allows it (:class:`OverlayBuilder`): the default
is to refuse with the list; a node owner provides environments through ``[images]``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from shoal._errors import ShoalError

# Run with the image's interpreter: its distributions, and what markers need to know.
_PROBE = """
import json, importlib.metadata as m, platform, sys, os
dists = {}
for d in m.distributions():
    name = d.metadata["Name"]
    if name:
        dists.setdefault(name, d.version)
env = {
    "python_version": "%d.%d" % sys.version_info[:2],
    "python_full_version": platform.python_version(),
    "sys_platform": sys.platform,
    "platform_system": platform.system(),
    "platform_machine": platform.machine(),
    "os_name": os.name,
    "implementation_name": sys.implementation.name,
}
print(json.dumps({"dists": dists, "env": env}))
"""


@dataclass(frozen=True)
class Installed:
    """What one interpreter has: distribution (canonical name) -> version, and the
    marker environment of that interpreter."""

    dists: dict[str, str]
    env: dict[str, str]


class RequirementChecker:
    """Checks requirements against images; one probe per interpreter file."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int, int], Installed] = {}

    def installed(self, interpreter: Path) -> Installed:
        """The distributions ``interpreter`` can import (cached per interpreter file;
        run isolated, ``-I``: what the image's environment holds, not a user's site).

        Raises
        ------
        OSError, subprocess.SubprocessError, ValueError
            If the interpreter cannot be asked.
        """
        st = interpreter.stat()
        key = (str(interpreter), st.st_size, st.st_mtime_ns)
        with self._lock:
            found = self._cache.get(key)
        if found is not None:
            return found
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        proc = subprocess.run(
            [str(interpreter), "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=self._timeout_s,
            env=env,
            check=True,
        )
        doc = json.loads(proc.stdout)
        found = Installed(
            {canonicalize_name(k): str(v) for k, v in doc["dists"].items()},
            {str(k): str(v) for k, v in doc["env"].items()},
        )
        with self._lock:
            self._cache[key] = found
        return found

    def missing(self, requirements: list[str], interpreter: Path) -> list[str]:
        """Each requirement the image does not satisfy, in words (empty: all are met)."""
        if not requirements:
            return []
        have = self.installed(interpreter)
        return unmet(requirements, have)


def unmet(requirements: list[str], have: Installed) -> list[str]:
    """The requirements ``have`` does not satisfy, each with what is there instead."""
    return [why for _, why in unmet_pairs(requirements, have)]


def unmet_pairs(requirements: list[str], have: Installed) -> list[tuple[str, str]]:
    """``(requirement, why)`` for each requirement ``have`` does not satisfy; an invalid
    requirement string is unmet whatever is installed."""
    out = []
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement as e:
            out.append((text, f"{text!r} is not a requirement ({e})"))
            continue
        if req.marker is not None and not req.marker.evaluate(have.env):
            continue  # not for this interpreter (e.g. ; python_version < "3.9")
        version = have.dists.get(canonicalize_name(req.name))
        if version is None:
            out.append((text, f"{text} (not installed)"))
        elif req.specifier and not req.specifier.contains(version, prereleases=True):
            out.append((text, f"{text} (installed: {version})"))
    return out


def overlay_dists(folder: Path) -> dict[str, str]:
    """The distributions installed into ``folder`` (canonical name -> version)."""
    return {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in importlib.metadata.distributions(path=[str(folder)])
        if d.metadata["Name"]
    }


class OverlayBuilder:
    """Installs the requirements an image lacks into a folder cached per (image
    interpreter, requirements), from the node's own package index, so the task runs
    with the image's interpreter and that folder first on its ``PYTHONPATH``.

    Only where the node's owner allows it (``install_requirements = true`` and a
    ``package_index`` in node.toml). pip runs from the agent's own environment
    (``--target``, binary wheels only, for the image's Python version): the image needs
    no pip. A folder is built once (under a lock, into a temporary folder renamed when
    complete), so concurrent instances and agent restarts reuse it.
    """

    def __init__(self, root: Path, package_index: str, timeout_s: float = 900.0) -> None:
        self.root = root
        self.package_index = package_index
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def _index_args(self) -> list[str]:
        if "://" in self.package_index and not self.package_index.startswith("file:"):
            return ["--index-url", self.package_index]
        return ["--no-index", "--find-links", self.package_index]

    def overlay(self, interpreter: Path, requirements: list[str], have: Installed) -> Path:
        """The folder that holds ``requirements`` for ``interpreter`` (built if needed).

        Raises
        ------
        ShoalError
            ``node.requirements`` with pip's last lines when it cannot install them.
        """
        key = hashlib.sha256(
            "\0".join([str(interpreter), *sorted(requirements)]).encode()
        ).hexdigest()[:24]
        folder = self.root / key
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if (folder / ".complete").is_file():
                return folder
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.root))
            argv = [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--no-compile",
                "--target",
                str(tmp),
                "--only-binary=:all:",
                "--python-version",
                have.env.get("python_version", "{}.{}".format(*sys.version_info[:2])),
                *self._index_args(),
                *requirements,
            ]
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=self._timeout_s, check=False
            )
            if proc.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
                raise ShoalError(
                    f"installing {', '.join(requirements)} from {self.package_index} "
                    f"failed: {tail}",
                    code="node.requirements",
                    hint="put wheels of these distributions (and their dependencies) into "
                    "the node's package_index, or install them into the image",
                )
            (tmp / ".complete").write_text("\n".join(requirements) + "\n")
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
            return folder
