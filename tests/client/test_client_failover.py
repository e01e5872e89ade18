"""Several coordinator URLs: the user client, the CLI and the node agent's client move
past one that does not answer, and give up within a bound naming each URL. (Standbys,
which need PostgreSQL, are in tests/coord/test_coord_failover.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_harness import Coordinator, deployment
from helpers import free_port

from shoal import Client
from shoal._errors import ShoalError
from shoal._node.client import CoordinatorClient
from shoal._node.config import parse_config

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    with deployment(tmp_path_factory.mktemp("failover")) as d:
        yield d.coordinator()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_the_user_client_moves_past_a_dead_url(coord: Coordinator) -> None:
    dead = dead_url()
    with Client(f"{dead}, {coord.url}/", coord.user_token) as client:
        assert client.urls == [dead, coord.url]
        assert client.swarms() == []
        assert client.url == coord.url
        assert dead in repr(client) and coord.user_token not in repr(client)


def test_with_no_coordinator_answering_the_client_fails_within_its_bound() -> None:
    first, second = dead_url(), dead_url()
    with Client(f"{first},{second}", "token", failover_s=1.0) as client:
        started = time.monotonic()
        with pytest.raises(ShoalError) as info:
            client.swarms()
        took = time.monotonic() - started
    assert info.value.code == "client.unreachable"
    assert first in info.value.message and second in info.value.message
    assert "within 1s" in info.value.message
    assert took < 3.0, took


def test_a_url_list_without_a_scheme_is_refused_naming_the_url() -> None:
    with pytest.raises(ShoalError, match=r"'coord:8750'.*no http") as info:
        Client("http://a:8750,coord:8750", "token")
    assert info.value.code == "client.config"


def test_the_node_client_moves_past_a_dead_url(coord: Coordinator) -> None:
    dead = dead_url()
    client = CoordinatorClient(f"{dead},{coord.url}", threading.Event(), retry_max_s=0.2)
    try:
        assert client.call("GET", "/v1/health").json()["role"] == "active"
        assert client.url == coord.url
    finally:
        client.close()


def test_the_node_config_takes_several_urls_as_a_list_or_commas(tmp_path: Path) -> None:
    base = {"node_id": "n", "state_dir": str(tmp_path)}
    listed = parse_config({**base, "coordinator": ["http://a:1", "http://b:2"]}, tmp_path)
    assert listed.coordinator == "http://a:1,http://b:2"
    commas = parse_config({**base, "coordinator": "http://a:1, https://b:2"}, tmp_path)
    assert commas.coordinator == "http://a:1, https://b:2"
    with pytest.raises(ShoalError, match="coordinator"):
        parse_config({**base, "coordinator": "http://a:1,ftp://b"}, tmp_path)
