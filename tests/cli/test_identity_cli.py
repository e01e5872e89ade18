"""``shoal coordinator token|node|user-token`` and their errors, against a real
coordinator process (they find it through its state folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from deploy_harness import QUIET, Coordinator, deployment

from shoal._cli.identity import parse_duration

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    root = tmp_path_factory.mktemp("cli-identity")
    with deployment(root) as d:
        yield d.coordinator(db=f"sqlite:///{root / 'shoal.db'}")


def shoal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **QUIET, "COLUMNS": "200"},
    )


def enrol(coord: Coordinator, node_id: str, token: str) -> httpx.Response:
    body = {"join_token": token, "node_id": node_id}
    return httpx.post(f"{coord.url}/v1/nodes/enrol", json=body, timeout=30)


def test_token_prints_the_default_and_create_list_revoke_manage_the_others(
    coord: Coordinator,
) -> None:
    state = str(coord.state)
    default = shoal("coordinator", "token", "--state", state)
    assert default.returncode == 0, default.stderr
    assert default.stdout.strip() == coord.join_token

    made = shoal(
        "coordinator", "token", "create", "--state", state, "--uses", "1", "--expires", "1h",
        "--node", "site-a",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert "\n" not in secret and len(secret) >= 40  # only the secret on stdout
    token_id = made.stderr.split()[2].rstrip(":")
    assert "node site-a, uses 1" in made.stderr
    assert enrol(coord, "site-b", secret).status_code == 403  # bound to site-a
    assert enrol(coord, "site-a", secret).status_code == 200

    listed = shoal("coordinator", "token", "list", "--state", state)
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if token_id in row)
    assert "used up" in line and "site-a" in line and "1/1" in line
    assert secret not in listed.stdout and coord.join_token not in listed.stdout

    other = shoal("coordinator", "token", "create", "--state", state).stdout.strip()
    other_id = next(
        row.split()[1]
        for row in shoal("coordinator", "token", "list", "--state", state).stdout.splitlines()
        if "active" in row and "default" not in row
    )
    revoked = shoal("coordinator", "token", "revoke", other_id, "--state", state)
    assert revoked.returncode == 0 and f"join token {other_id} revoked" in revoked.stdout
    assert enrol(coord, "site-c", other).json()["error"]["code"] == "auth.join_revoked"

    unknown = shoal("coordinator", "token", "revoke", "nope", "--state", state)
    assert unknown.returncode != 0 and "unknown join token 'nope'" in unknown.stderr
    bad = shoal("coordinator", "token", "create", "--state", state, "--expires", "soon")
    assert bad.returncode != 0 and "--expires" in bad.stderr and "1h" in bad.stderr


def test_node_revoke_and_reset(coord: Coordinator) -> None:
    state = str(coord.state)
    credential = enrol(coord, "cli-node", coord.join_token).json()["credential"]
    out = shoal("coordinator", "node", "revoke", "cli-node", "--state", state)
    assert out.returncode == 0, out.stderr
    assert "node cli-node revoked" in out.stdout
    beat = httpx.post(
        f"{coord.url}/v1/nodes/heartbeat",
        json={},
        headers={"Authorization": f"Bearer {credential}"},
    )
    assert beat.status_code == 401
    assert enrol(coord, "cli-node", coord.join_token).status_code == 403
    out = shoal("coordinator", "node", "reset", "cli-node", "--state", state)
    assert out.returncode == 0 and "node cli-node reset" in out.stdout
    assert enrol(coord, "cli-node", coord.join_token).status_code == 200
    missing = shoal("coordinator", "node", "revoke", "ghost", "--state", state)
    assert missing.returncode != 0 and "unknown node 'ghost'" in missing.stderr


def test_user_token_rotate_prints_the_new_one(coord: Coordinator) -> None:
    old = coord.user_token
    out = shoal("coordinator", "user-token", "rotate", "--state", str(coord.state))
    assert out.returncode == 0, out.stderr
    new = out.stdout.strip()
    assert new and new != old and coord.user_token == new
    url = f"{coord.url}/v1/swarms"
    assert httpx.get(url, headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_the_commands_say_what_is_missing(tmp_path: Path) -> None:
    out = shoal("coordinator", "token", "list", "--state", str(tmp_path / "none"))
    assert out.returncode != 0 and "not a coordinator state folder" in out.stderr
    out = shoal("coordinator", "user-token", "rotate", "--state", str(tmp_path))
    assert out.returncode != 0 and "operator-token" in out.stderr
    assert "Traceback" not in out.stderr
    config = tmp_path / "node.toml"
    config.write_text(
        'node_id = "fresh"\ncoordinator = "http://127.0.0.1:1"\njoin_token = "t"\n'
        'state_dir = "state"\n'
    )
    out = shoal("node", "rotate-credential", "--config", str(config))
    assert out.returncode != 0 and "has no credential" in out.stderr
    assert "Traceback" not in out.stderr


def test_parse_duration() -> None:
    assert parse_duration("90") == 90 and parse_duration("90s") == 90
    assert parse_duration("15m") == 900 and parse_duration("1h") == 3600
    assert parse_duration("1.5d") == 1.5 * 86400
    for bad in ("", "0", "-1h", "1w", "soon"):
        with pytest.raises(ValueError):
            parse_duration(bad)
