"""Identities at the coordinator's HTTP edge (#14, point 2), against a real coordinator
process: enrolment never takes over a known node id; join tokens expire, run out, are
bound to a node id and are revoked; node credentials and the user token are rotated and
revoked; failed authentication is limited per source address.

Nodes are played by the test over HTTP, so every answer is checked exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from deploy_harness import Coordinator, Deployment, deployment
from helpers import poll_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Coordinator]]:
    root = tmp_path_factory.mktemp("identity")
    with deployment(root) as d:
        # No rate limit here: these tests fail to authenticate on purpose, often.
        coord = d.coordinator(
            db=f"sqlite:///{root / 'shoal.db'}", extra=["--auth-max-failures", "0"]
        )
        yield d, coord


@pytest.fixture
def coord(deployed: tuple[Deployment, Coordinator]) -> Coordinator:
    return deployed[1]


@pytest.fixture
def operator(coord: Coordinator) -> Iterator[httpx.Client]:
    with coord.operator() as client:
        yield client


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err: dict[str, Any] = resp.json()["error"]
    assert set(err) == {"code", "message", "hint"}
    return err


def _enrol(
    coord: Coordinator, node_id: str, join_token: str | None = None, credential: str = ""
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    body = {"node_id": node_id, "datasets": ["numbers"]}
    if join_token is not None:
        body["join_token"] = join_token
    return httpx.post(f"{coord.url}/v1/nodes/enrol", json=body, headers=headers, timeout=30)


def _credential(coord: Coordinator, node_id: str, join_token: str | None = None) -> str:
    resp = _enrol(coord, node_id, coord.join_token if join_token is None else join_token)
    assert resp.status_code == 200, resp.text
    credential: str = resp.json()["credential"]
    return credential


def _beat(coord: Coordinator, credential: str) -> httpx.Response:
    return httpx.post(
        f"{coord.url}/v1/nodes/heartbeat",
        json={"datasets": ["numbers"]},
        headers={"Authorization": f"Bearer {credential}"},
        timeout=30,
    )


def _token(operator: httpx.Client, **body: Any) -> dict[str, Any]:
    resp = operator.post("/v1/admin/join-tokens", json=body)
    assert resp.status_code == 200, resp.text
    made: dict[str, Any] = resp.json()
    return made


# ------------------------------------------------------------------------- takeover
def test_a_known_node_id_is_not_taken_over_with_the_join_token(coord: Coordinator) -> None:
    real = _credential(coord, "victim")
    assert _beat(coord, real).status_code == 200
    impostor = _enrol(coord, "victim", coord.join_token)
    err = _error(impostor, 403)
    assert err["code"] == "auth.identity"
    assert "victim" in err["message"] and "shoal coordinator node reset" in err["hint"]
    # The real node keeps its credential; a wrong credential does not enrol either.
    assert _beat(coord, real).status_code == 200
    forged = _enrol(coord, "victim", coord.join_token, credential="victim:guessed")
    assert _error(forged, 401)["code"] == "auth.node"
    other = _credential(coord, "bystander")
    assert _error(_enrol(coord, "victim", credential=other), 401)["code"] == "auth.node"
    assert _beat(coord, real).status_code == 200


def test_a_node_enrols_again_with_its_credential(coord: Coordinator) -> None:
    old = _credential(coord, "returning")
    resp = _enrol(coord, "returning", credential=old)  # no join token needed
    assert resp.status_code == 200, resp.text
    new = resp.json()["credential"]
    assert new != old and new.startswith("returning:")
    assert _error(_beat(coord, old), 401)["code"] == "auth.node"
    assert _beat(coord, new).status_code == 200


def test_an_enrolment_whose_answer_was_lost_is_answered_the_same(
    coord: Coordinator, operator: httpx.Client
) -> None:
    once = _token(operator, uses=1)
    chosen = "repeated:" + "b" * 43
    body = {"join_token": once["token"], "node_id": "repeated", "credential": chosen}
    url = f"{coord.url}/v1/nodes/enrol"
    for _ in range(2):  # the second is the agent's retry after a lost answer
        resp = httpx.post(url, json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        assert resp.json()["credential"] == chosen
    assert _beat(coord, chosen).status_code == 200
    listed = {t["token_id"]: t for t in operator.get("/v1/admin/join-tokens").json()}
    assert listed[once["token_id"]]["uses"] == 1
    # Proposing someone else's id, or a weak secret, is refused.
    for bad in ("other:" + "b" * 43, "repeated:short"):
        wrong = httpx.post(url, json={**body, "node_id": "repeated", "credential": bad})
        assert _error(wrong, 422)["code"] == "auth.credential_format"


# ----------------------------------------------------------------------- join tokens
def test_join_tokens_expire_run_out_are_revoked_and_bound(
    coord: Coordinator, operator: httpx.Client
) -> None:
    once = _token(operator, uses=1)
    assert once["state"] == "active" and once["max_uses"] == 1 and once["token"]
    _credential(coord, "once-a", once["token"])
    used = _error(_enrol(coord, "once-b", once["token"]), 401)
    assert used["code"] == "auth.join_used_up" and once["token_id"] in used["message"]

    short = _token(operator, expires_in_s=0.5)
    expired = poll_for(
        lambda: (r := _enrol(coord, "late", short["token"])).status_code == 401 and r,
        10,
        "the token to expire",
    )
    assert _error(expired, 401)["code"] == "auth.join_expired"

    revoked = _token(operator)
    resp = operator.post(f"/v1/admin/join-tokens/{revoked['token_id']}/revoke")
    assert resp.status_code == 200 and resp.json()["state"] == "revoked"
    assert _error(_enrol(coord, "r", revoked["token"]), 401)["code"] == "auth.join_revoked"

    bound = _token(operator, node_id="site-b")
    wrong = _error(_enrol(coord, "site-c", bound["token"]), 403)
    assert wrong["code"] == "auth.join_node" and "site-b" in wrong["message"]
    _credential(coord, "site-b", bound["token"])

    assert _error(_enrol(coord, "x", "not-a-token"), 401)["code"] == "auth.join"
    assert _error(_enrol(coord, "x"), 401)["code"] == "auth.join"
    _error(operator.post("/v1/admin/join-tokens/nope/revoke"), 404)
    for bad in ({"uses": 0}, {"uses": 2**63}, {"expires_in_s": 0}, {"expires_in_s": 1e300}):
        _error(operator.post("/v1/admin/join-tokens", json=bad), 422)
    _error(operator.post("/v1/admin/join-tokens", json={"node_id": "a/b"}), 422)

    listed = {t["token_id"]: t for t in operator.get("/v1/admin/join-tokens").json()}
    assert listed[once["token_id"]]["state"] == "used up"
    assert listed[once["token_id"]]["uses"] == 1
    assert listed[short["token_id"]]["state"] == "expired"
    assert listed[revoked["token_id"]]["state"] == "revoked"
    assert listed[bound["token_id"]]["node_id"] == "site-b"
    assert listed["default"]["state"] == "active"
    assert all("token" not in t for t in listed.values())  # never a secret


def test_join_tokens_are_stored_hashed(
    deployed: tuple[Deployment, Coordinator], operator: httpx.Client
) -> None:
    secret = _token(operator, uses=3)["token"]
    d, coord = deployed
    stored = (d.root / "shoal.db").read_bytes()
    for name in ("shoal.db-wal",):  # SQLite's write-ahead log holds recent pages
        wal = d.root / name
        if wal.exists():
            stored += wal.read_bytes()
    assert secret.encode() not in stored
    assert coord.join_token.encode() not in stored
    assert secret not in coord.output() and coord.join_token not in coord.output()


def test_a_token_bound_to_a_known_node_replaces_it(
    coord: Coordinator, operator: httpx.Client
) -> None:
    lost = _credential(coord, "replaced")
    bound = _token(operator, node_id="replaced", uses=1)
    fresh = _credential(coord, "replaced", bound["token"])
    assert _error(_beat(coord, lost), 401)["code"] == "auth.node"
    assert _beat(coord, fresh).status_code == 200


def test_the_default_join_token_can_be_revoked(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        coord = d.coordinator(db=f"sqlite:///{tmp_path / 'shoal.db'}")
        with coord.operator() as operator:
            _credential(coord, "early")
            assert operator.post("/v1/admin/join-tokens/default/revoke").status_code == 200
            err = _error(_enrol(coord, "later", coord.join_token), 401)
            assert err["code"] == "auth.join_revoked"


# --------------------------------------------------------------- node credentials
def test_a_revoked_node_is_refused_at_once_and_reset_frees_its_id(
    coord: Coordinator, operator: httpx.Client
) -> None:
    credential = _credential(coord, "revoked-node")
    assert _beat(coord, credential).status_code == 200
    resp = operator.post("/v1/admin/nodes/revoked-node/revoke")
    assert resp.json() == {"node_id": "revoked-node", "revoked": True, "lost_instances": 0}
    assert _error(_beat(coord, credential), 401)["code"] == "auth.node"
    again = _error(_enrol(coord, "revoked-node", coord.join_token), 403)
    assert again["code"] == "auth.node_revoked"
    with coord.user() as user:
        nodes = {n["node_id"]: n for n in user.get("/v1/nodes").json()}
    assert nodes["revoked-node"]["connected"] is False

    assert operator.post("/v1/admin/nodes/revoked-node/reset").status_code == 200
    fresh = _credential(coord, "revoked-node")  # the next enrolment takes the id
    assert _beat(coord, fresh).status_code == 200
    assert _error(_beat(coord, credential), 401)["code"] == "auth.node"
    _error(operator.post("/v1/admin/nodes/never-enrolled/revoke"), 404)


def test_a_node_rotates_its_credential(coord: Coordinator) -> None:
    old = _credential(coord, "rotating")
    url = f"{coord.url}/v1/nodes/credential"
    made = httpx.post(url, headers={"Authorization": f"Bearer {old}"}, timeout=30)
    assert made.status_code == 200, made.text
    second = made.json()["credential"]
    assert _error(_beat(coord, old), 401)["code"] == "auth.node"
    assert _beat(coord, second).status_code == 200
    # A proposed credential; repeating the request with it as bearer answers the same.
    proposed = "rotating:" + "A" * 43
    body = {"credential": proposed}
    for bearer in (second, proposed):
        resp = httpx.post(url, json=body, headers={"Authorization": f"Bearer {bearer}"})
        assert resp.status_code == 200 and resp.json()["credential"] == proposed
    assert _error(_beat(coord, second), 401)["code"] == "auth.node"
    bad = httpx.post(
        url,
        json={"credential": "other:" + "A" * 43},
        headers={"Authorization": f"Bearer {proposed}"},
    )
    assert _error(bad, 422)["code"] == "auth.credential_format"
    assert _beat(coord, proposed).status_code == 200


# ------------------------------------------------------------------------ user token
def test_the_user_token_rotates_and_the_old_one_stops_working(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        coord = d.coordinator(db=f"sqlite:///{tmp_path / 'shoal.db'}")
        old = coord.user_token
        with coord.user() as user:
            assert user.get("/v1/swarms").status_code == 200
            # The user token is not the operator's.
            assert _error(user.post("/v1/admin/user-token"), 401)["code"] == "auth.operator"
        with coord.operator() as operator:
            new = operator.post("/v1/admin/user-token").json()["token"]
        assert new != old and coord.user_token == new  # also on disk, for the CLI
        assert ((coord.state / "user-token").stat().st_mode & 0o777) == 0o600
        url = f"{coord.url}/v1/swarms"
        stale = httpx.get(url, headers={"Authorization": f"Bearer {old}"})
        assert _error(stale, 401)["code"] == "auth.user"
        assert httpx.get(url, headers={"Authorization": f"Bearer {new}"}).status_code == 200


# ------------------------------------------------------------------------ rate limit
def test_failed_authentication_is_limited_per_source(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        coord = d.coordinator(
            db=f"sqlite:///{tmp_path / 'shoal.db'}",
            extra=["--auth-max-failures", "5", "--auth-window", "3"],
        )
        good = {"Authorization": f"Bearer {coord.user_token}"}
        bad = {"Authorization": "Bearer wrong"}
        url = f"{coord.url}/v1/swarms"
        with (
            httpx.Client(timeout=30) as here,
            httpx.Client(
                timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.2")
            ) as elsewhere,
        ):
            for _ in range(5):
                assert _error(here.get(url, headers=bad), 401)["code"] == "auth.user"
            refused = here.get(url, headers=good)  # even the right token, from there
            assert _error(refused, 429)["code"] == "auth.rate_limited"
            assert 1 <= int(refused.headers["Retry-After"]) <= 3
            enrol = here.post(
                f"{coord.url}/v1/nodes/enrol", json={"join_token": coord.join_token, "node_id": "n"}
            )
            _error(enrol, 429)
            assert elsewhere.get(url, headers=good).status_code == 200  # another source
            assert here.get(f"{coord.url}/v1/health").status_code == 200  # no auth: served
            poll_for(
                lambda: here.get(url, headers=good).status_code == 200,
                10,
                "the limit to lift after its window",
                interval=0.5,
            )
