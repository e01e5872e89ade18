"""A full disk is a clear error (issue #14, point 5): a real coordinator whose blob
folder is a 1 MiB tmpfs and a real node agent. The upload that does not fit answers
507 ``storage.full``; the agent does not retry it, the instance fails with that reason,
the swarm ends, the coordinator logs it, and ``shoal status`` shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_harness import submit
from fault_harness import Fed
from helpers import one_task, tiny_tmpfs

pytestmark = pytest.mark.timeout(120)

# 2 MB of float64s: over the 1 MiB the blob folder has.
TOO_BIG = """
import numpy as np
self.world.results.add("big", np.arange(250_000, dtype=np.float64))
time.sleep(60)  # the agent ends the instance at once; it must not wait for this
"""


@pytest.fixture
def tiny_blobs(tmp_path: Path) -> Iterator[Path]:
    """The coordinator's blob folder (``<state>/blobs``) on a 1 MiB tmpfs (set up before
    ``fed``, so it is unmounted after the coordinator stopped)."""
    with tiny_tmpfs(tmp_path / "coord" / "blobs", "1m") as folder:
        yield folder


def test_a_full_blob_disk_fails_the_instance_with_its_reason(
    tiny_blobs: Path, fed: Fed, tmp_path: Path
) -> None:
    coord = fed.start()
    assert coord.state / "blobs" == tiny_blobs
    fed.node("n0")
    fed.wait_connected("n0")
    swarm_id = submit(fed.user, one_task(TOO_BIG, "n0"))
    status = fed.wait_done(swarm_id, timeout=45)

    assert status["status"] == "failed", json.dumps(status, indent=1)
    (failure,) = status["failures"]
    assert failure["node_id"] == "n0" and failure["kind"] == "error", failure
    error = failure["error"]
    assert error.startswith("results.add failed: coordinator answered 507: "), error
    assert "the coordinator's storage is full: writing blob sha256:" in error
    assert "free disk space" in error
    assert "storage is full" in status["reason"]

    # The operator sees it: a line in the coordinator's log, the failure in `shoal status`.
    assert "storage full: writing blob sha256:" in coord.output()
    env = {**os.environ, "SHOAL_COORDINATOR": coord.url, "SHOAL_TOKEN": coord.user_token}
    shown = subprocess.run(
        [sys.executable, "-m", "shoal", "status", swarm_id],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert "the coordinator's storage is full" in shown.stdout, shown.stdout + shown.stderr
    # The agent gave up on the upload: no retry loop left behind (one 507, no retries).
    agent_log = fed.nodes["n0"].log()
    assert "retrying" not in agent_log, agent_log[-3000:]
    assert not list((tiny_blobs / "tmp").iterdir()), "a partial upload was kept"
