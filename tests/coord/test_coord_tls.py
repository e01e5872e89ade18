"""The coordinator over TLS with a self-signed certificate the node and user trust."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from deploy_harness import deployment, global_value, submit, wait_nodes, wait_status
from swarms import MeanSwarm

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool"),
]


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def test_nodes_and_users_speak_tls_to_the_coordinator(tmp_path: Path) -> None:
    tls = _self_signed(tmp_path)
    numbers = tmp_path / "numbers.npy"
    np.save(numbers, np.arange(4.0))
    with deployment(tmp_path) as d:
        coord = d.coordinator(db=f"sqlite:///{tmp_path / 'shoal.db'}", tls=tls)
        assert coord.url.startswith("https://")
        with pytest.raises(httpx.ConnectError):  # an untrusted certificate is refused
            httpx.get(f"{coord.url}/v1/health")
        d.node(coord, "tls-node", {"numbers": numbers})
        with coord.user() as user:
            wait_nodes(user, ["tls-node"])
            swarm_id = submit(user, MeanSwarm(iterations=1))
            assert wait_status(user, swarm_id)["status"] == "succeeded"
            assert global_value(user, swarm_id, "mean") == pytest.approx(1.5)
