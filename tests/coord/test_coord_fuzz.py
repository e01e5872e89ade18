"""Schemathesis against a live coordinator process: every operation of its OpenAPI spec,
fuzzed with data that fits the spec and data that does not, with the user token, with a
node credential and with no token. No answer may be a server error (5xx), and every
answer must conform to the spec (status, content type, body schema, headers); the
coordinator's log must hold no traceback.

Bounded: :data:`EXAMPLES` cases per operation and mode, no shrinking, a deadline per
request, and the long polls asked not to wait.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import msgpack
import pytest
import schemathesis
from deploy_harness import Coordinator, deployment, submit
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode, SerializationContext
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from swarms import MeanSwarm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
#: Routes that long-poll: a generated ``wait`` that is valid is replaced by 0.
LONG_POLLS = re.compile(r"/(instructions|logs)$")


def _fits_msgpack(value: Any) -> Any:
    # msgpack carries integers in [-2**63, 2**64); the fuzzer's bigger ones become text.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {k: _fits_msgpack(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fits_msgpack(v) for v in value]
    return value


@schemathesis.serializer("application/msgpack")
def _msgpack(ctx: SerializationContext, value: Any) -> bytes:
    data: bytes = msgpack.packb(_fits_msgpack(value), use_bin_type=True)
    return data


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Coordinator, str]]:
    """A coordinator process with one enrolled node (its credential) and one swarm."""
    root = tmp_path_factory.mktemp("fuzz")
    with deployment(root) as d:
        coord = d.coordinator(db=f"sqlite:///{root / 'shoal.db'}")
        enrolled = httpx.post(
            f"{coord.url}/v1/nodes/enrol",
            json={"join_token": coord.join_token, "node_id": "fuzz", "datasets": ["numbers"]},
        )
        enrolled.raise_for_status()
        with coord.user() as user:
            submit(user, MeanSwarm())
        yield coord, enrolled.json()["credential"]


def _no_long_wait(case: Case) -> None:
    if not LONG_POLLS.search(case.operation.path):
        return
    query = dict(case.query or {})
    try:
        valid = 0 <= float(query.get("wait", 25)) <= 60
    except (TypeError, ValueError):
        valid = False
    if valid:
        query["wait"] = 0
        case.query = query


@pytest.mark.parametrize("who", ["user", "node", "none"])
def test_fuzzed_requests_get_no_server_error_and_spec_conforming_answers(
    live: tuple[Coordinator, str], who: str
) -> None:
    coord, credential = live
    token = {"user": coord.user_token, "node": credential, "none": None}[who]
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(f"{coord.url}/openapi.json")
    failures: dict[str, str] = {}
    ran = 0
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not (op.path_parameters or op.query or op.body):
                continue  # nothing in it can be made invalid

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=timedelta(seconds=10),
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                database=None,
                derandomize=True,
            )
            def check(case: Case) -> None:
                _no_long_wait(case)
                response = case.call(base_url=coord.url, headers=headers, timeout=10)
                case.validate_response(response, checks=CHECKS, headers=headers)

            ran += 1
            try:
                check()
            except (Exception, FailureGroup) as e:
                failures[f"{op.label} ({mode.value})"] = str(e)[:3000]
    assert ran >= 20, ran
    assert not failures, "\n\n".join(f"== {k}\n{v}" for k, v in failures.items())
    assert "Traceback" not in coord.output(), coord.output()[-6000:]
