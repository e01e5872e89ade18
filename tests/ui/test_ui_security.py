"""The dashboard's security against a real coordinator with a real node agent on
loopback: a token-less request, a node credential and a forged CSRF post are each
refused, and no page carries a token."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import httpx
import pytest
from deploy_harness import Coordinator, Deployment, deployment, submit, wait_nodes, wait_status
from helpers import poll_for
from ui_helpers import SWARM

from shoal._define.loader import load_swarm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Coordinator, str]]:
    """A coordinator, node ``site-a`` and its credential."""
    with deployment(tmp_path_factory.mktemp("ui-security")) as d:
        coord = d.coordinator(heartbeat_timeout=5.0)
        _, folder = d.node(coord, "site-a")
        with coord.user() as user:
            wait_nodes(user, ["site-a"])
        cred = poll_for(
            lambda: (
                (folder / "state" / "credential").exists()
                and (folder / "state" / "credential").read_text().strip()
            ),
            10,
            "the node's credential file",
        )
        yield d, coord, cred


@contextlib.contextmanager
def _signed_in(coord: Coordinator) -> Iterator[httpx.Client]:
    """A client that signed in through the form (it holds the session cookie)."""
    with httpx.Client(base_url=coord.url, timeout=10) as c:
        yield _sign_in(c, coord)


def _sign_in(c: httpx.Client, coord: Coordinator) -> httpx.Client:
    r = c.post("/ui/login", data={"token": coord.user_token, "next": "/ui/"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/", r.text
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie, cookie
    assert coord.user_token not in cookie  # the cookie is a session id, not the token
    return c


def test_token_less_requests_are_refused(live: tuple[Deployment, Coordinator, str]) -> None:
    _, coord, _ = live
    with httpx.Client(base_url=coord.url, timeout=10) as anon:
        assert anon.get("/", follow_redirects=False).headers["location"] == "/ui/"
        for path in ("/ui/", "/ui/nodes/site-a", "/ui/compare", "/ui/swarms/x"):
            r = anon.get(path, follow_redirects=False)
            assert r.status_code == 303, (path, r.status_code)
            assert r.headers["location"].startswith("/ui/login?next="), path
        r = anon.get("/ui/events", headers={"Accept": "text/event-stream"})
        assert r.status_code == 401
        assert anon.post("/ui/swarms/x/stop", data={"csrf": "x"}).status_code == 401
        # The API's bearer token does not open pages either: only a signed-in session.
        r = anon.get(
            "/ui/", headers={"Authorization": f"Bearer {coord.user_token}"}, follow_redirects=False
        )
        assert r.status_code == 303


def test_a_node_credential_cannot_open_the_dashboard(
    live: tuple[Deployment, Coordinator, str],
) -> None:
    _, coord, cred = live
    with httpx.Client(base_url=coord.url, timeout=10) as c:
        # The credential is real: the node API takes it.
        ok = c.get(f"/v1/blobs/sha256:{'0' * 64}", headers={"Authorization": f"Bearer {cred}"})
        assert ok.status_code == 404, ok.text  # past authentication: no such blob
        for token in (cred, coord.join_token, coord.operator_token):
            r = c.post("/ui/login", data={"token": token}, follow_redirects=False)
            assert r.status_code == 401, r.text
            assert "set-cookie" not in r.headers
        r = c.get("/ui/", headers={"Authorization": f"Bearer {cred}"}, follow_redirects=False)
        assert r.status_code == 303 and "/ui/login" in r.headers["location"]


def test_a_forged_csrf_post_does_not_stop_the_swarm(
    live: tuple[Deployment, Coordinator, str],
) -> None:
    _, coord, _ = live
    swarm, _ = load_swarm(f"{SWARM}:Watched")
    swarm.max_iterations = 1000
    with coord.user() as user, _signed_in(coord) as browser:
        swarm_id = submit(user, swarm)
        page = browser.get(f"/ui/swarms/{swarm_id}").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        for forged in ({}, {"csrf": ""}, {"csrf": "forged"}, {"csrf": csrf[1] + "x"}):
            r = browser.post(f"/ui/swarms/{swarm_id}/stop", data=forged)
            assert r.status_code == 403, (forged, r.text)
        # Another browser's session has another CSRF token: it does not pass here.
        with _signed_in(coord) as other:
            r = other.post(f"/ui/swarms/{swarm_id}/stop", data={"csrf": csrf[1]})
            assert r.status_code == 403
        assert user.get(f"/v1/swarms/{swarm_id}").json()["status"] == "running"
        # The real form's token stops it.
        r = browser.post(f"/ui/swarms/{swarm_id}/stop", data={"csrf": csrf[1]})
        assert r.status_code == 303
        assert wait_status(user, swarm_id, 30)["status"] == "stopped"


def test_no_page_reveals_a_token(live: tuple[Deployment, Coordinator, str]) -> None:
    _, coord, cred = live
    swarm, _ = load_swarm(f"{SWARM}:Watched")
    swarm.max_iterations = 2
    with coord.user() as user, _signed_in(coord) as browser:
        swarm_id = submit(user, swarm)
        wait_status(user, swarm_id, 60)
        instance = user.get(f"/v1/swarms/{swarm_id}").json()["failures"]
        pages = [
            "/ui/",
            f"/ui/swarms/{swarm_id}",
            f"/ui/swarms/{swarm_id}?node=site-a&level=info&text=starts",
            "/ui/nodes/site-a",
            f"/ui/compare?swarm={swarm_id}&metric=accuracy",
            "/ui/login",
            "/ui/static/dash.js",
        ]
        pages += [f"/ui/instances/{f['instance_id']}" for f in instance]
        secrets = {
            "user token": coord.user_token,
            "join token": coord.join_token,
            "operator token": coord.operator_token,
            "node credential": cred,
            "node credential secret": cred.partition(":")[2],
        }
        for path in pages:
            r = browser.get(path)
            assert r.status_code == 200, (path, r.status_code)
            for what, secret in secrets.items():
                assert secret and secret not in r.text, f"{path} shows the {what}"
        assert "site-a" in browser.get("/ui/").text  # the pages did render content
