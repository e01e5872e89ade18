"""HTTP helpers of the client: paths, query parameters, errors, server-sent events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from shoal._api.records import SwarmStatus
from shoal._errors import ShoalError


def path_part(part: str) -> str:
    return quote(str(part), safe=":")


def clean(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    return {k: v for k, v in params.items() if v is not None}


def raise_for_status(r: httpx.Response, what: str) -> None:
    if r.is_success:
        return
    code, message, hint = f"http.{r.status_code}", "", None
    try:
        err = r.json()["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or "")
        hint = err.get("hint") or None
    except (ValueError, KeyError, TypeError, AttributeError):
        text = r.text.strip().replace("\n", " ")
        message = f"HTTP {r.status_code} {r.reason_phrase}" + (f": {text[:200]}" if text else "")
    if hint is None:
        hint = {
            401: "check the user token (--token, SHOAL_TOKEN or the config file); "
            "`shoal coordinator start` prints it and keeps it in <state>/user-token",
            403: "use the token of the user who deployed the swarm",
            404: "list swarms with `shoal status` and check the id",
            413: "the request is larger than the coordinator's --max-request-mb accepts",
        }.get(r.status_code)
    raise ShoalError(f"{what}: {message or f'HTTP {r.status_code}'}", code=code, hint=hint)


def sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON ``data`` of each server-sent event."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                text = "\n".join(data)
                data = []
                try:
                    value = json.loads(text)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    yield value
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)


def wait_timeout(swarm_id: str, timeout: float | None, last: SwarmStatus | None) -> ShoalError:
    where = f"; it is {last.status} at iteration {last.iteration}" if last else ""
    return ShoalError(
        f"swarm {swarm_id} did not finish within {timeout or 0:g}s{where}",
        code="client.timeout",
        hint=f"wait longer, or look at `shoal status {swarm_id}` and `shoal logs {swarm_id}`",
    )
