"""Whether an image satisfies a module's ``requirements`` (seed 002's
``requirements=["numpy"]``, seed 001's ``requirements.txt`` in a module folder).

The node asks the image's own interpreter for its installed distributions
(``importlib.metadata``, once per image and interpreter file: cached by path, size and
modification time) and checks each requirement against them with ``packaging`` (PEP 440
versions, PEP 508 markers evaluated for that interpreter). A task whose image lacks one
is refused before it starts, naming every missing or mismatched distribution. Nothing
is installed: a node owner provides environments through ``[images]``.
"""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

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
    out = []
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement as e:
            out.append(f"{text!r} is not a requirement ({e})")
            continue
        if req.marker is not None and not req.marker.evaluate(have.env):
            continue  # not for this interpreter (e.g. ; python_version < "3.9")
        version = have.dists.get(canonicalize_name(req.name))
        if version is None:
            out.append(f"{text} (not installed)")
        elif req.specifier and not req.specifier.contains(version, prereleases=True):
            out.append(f"{text} (installed: {version})")
    return out
