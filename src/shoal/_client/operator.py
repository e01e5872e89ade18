"""The operator's client: join tokens, node revocation and reset, the user token.

The ``shoal coordinator token|node|user-token`` commands use it on the coordinator's
machine: it reads the operator token (``<state>/operator-token``) and where the
coordinator listens (``<state>/coordinator.json``, written when it starts) from the
coordinator's state folder.
"""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import TypeAdapter

from shoal._api.identity import JoinTokenCreated, JoinTokenInfo, NodeIdentityAnswer, TokenAnswer
from shoal._client.client import Client
from shoal._client.http import path_part
from shoal._errors import ShoalError

OPERATOR_TOKEN_FILE = "operator-token"  # as shoal._coord.server
ENDPOINT_FILE = "coordinator.json"

_INFO = TypeAdapter(JoinTokenInfo)
_INFOS = TypeAdapter(list[JoinTokenInfo])
_CREATED = TypeAdapter(JoinTokenCreated)
_NODE = TypeAdapter(NodeIdentityAnswer)
_TOKEN = TypeAdapter(TokenAnswer)


def _state_file(state: Path, name: str, what: str) -> str:
    try:
        return (state / name).read_text().strip()
    except FileNotFoundError:
        raise ShoalError(
            f"{state} has no {name}: it is not the state folder of a coordinator that ran",
            code="client.config",
            hint=f"give the --state of `shoal coordinator start` (it keeps the {what} there)",
        ) from None
    except OSError as e:
        raise ShoalError(
            f"cannot read {state / name}: {e.strerror}",
            code="client.config",
            hint="run the command as the coordinator's user",
        ) from None


class Operator:
    """Calls the operator's routes (``/v1/admin/...``) of a coordinator.

    Parameters
    ----------
    url
        The coordinator's URL.
    token
        The operator token.
    verify
        TLS verification, as for :class:`~shoal._client.Client`.
    """

    def __init__(
        self, url: str, token: str, verify: bool | str | os.PathLike[str] | ssl.SSLContext = True
    ) -> None:
        self._client = Client(url, token, verify=verify)
        self.url = self._client.url

    @classmethod
    def of_state(
        cls, state: Path, url: str | None = None, ca: str | os.PathLike[str] | None = None
    ) -> Operator:
        """The operator of the coordinator whose state folder is ``state``.

        ``url`` and ``ca`` default to what the coordinator recorded when it started.
        """
        token = _state_file(state, OPERATOR_TOKEN_FILE, "operator token")
        if url is None:
            text = _state_file(state, ENDPOINT_FILE, "URL it listens on")
            try:
                doc = json.loads(text)
                url = str(doc["url"])
                ca = ca or doc.get("ca_cert")
            except (ValueError, KeyError, TypeError):
                raise ShoalError(
                    f"{state / ENDPOINT_FILE} is damaged",
                    code="client.config",
                    hint="start the coordinator again (it rewrites the file), or pass "
                    "--coordinator URL",
                ) from None
        verify: bool | ssl.SSLContext = True
        if ca is not None and url.startswith("https://"):
            try:  # the system's CAs and the coordinator's own certificate
                verify = ssl.create_default_context()
                verify.load_verify_locations(cafile=os.fspath(ca))
            except (OSError, ssl.SSLError) as e:
                raise ShoalError(
                    f"cannot load the certificate {ca}: {e}",
                    code="client.config",
                    hint="pass --ca with the PEM file of the CA of the coordinator's certificate",
                ) from None
        return cls(url, token, verify)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> Operator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, what: str, adapter: TypeAdapter[Any], **kw: Any) -> Any:
        doc = self._client._json(method, path, what, **kw)
        return self._client._typed(adapter, doc, what)

    # ------------------------------------------------------------ join tokens
    def create_join_token(
        self, expires_in_s: float | None = None, uses: int | None = None, node_id: str | None = None
    ) -> JoinTokenCreated:
        """Make a join token; its secret is in the answer only."""
        body = {"expires_in_s": expires_in_s, "uses": uses, "node_id": node_id}
        created: JoinTokenCreated = self._call(
            "POST",
            "/v1/admin/join-tokens",
            "creating a join token",
            _CREATED,
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        return created

    def join_tokens(self) -> list[JoinTokenInfo]:
        """Every join token, oldest first."""
        found: list[JoinTokenInfo] = self._call(
            "GET", "/v1/admin/join-tokens", "listing join tokens", _INFOS
        )
        return found

    def revoke_join_token(self, token_id: str) -> JoinTokenInfo:
        """Revoke a join token."""
        info: JoinTokenInfo = self._call(
            "POST",
            f"/v1/admin/join-tokens/{path_part(token_id)}/revoke",
            f"revoking join token {token_id}",
            _INFO,
        )
        return info

    # ------------------------------------------------------------------ nodes
    def revoke_node(self, node_id: str) -> NodeIdentityAnswer:
        """End a node's credential; its id stays taken."""
        answer: NodeIdentityAnswer = self._call(
            "POST", f"/v1/admin/nodes/{path_part(node_id)}/revoke", f"revoking {node_id}", _NODE
        )
        return answer

    def reset_node(self, node_id: str) -> NodeIdentityAnswer:
        """End a node's credential and free its id for the next enrolment."""
        answer: NodeIdentityAnswer = self._call(
            "POST", f"/v1/admin/nodes/{path_part(node_id)}/reset", f"resetting {node_id}", _NODE
        )
        return answer

    # ------------------------------------------------------------------- users
    def rotate_user_token(self) -> str:
        """A new user token; the old one stops working."""
        answer: TokenAnswer = self._call(
            "POST", "/v1/admin/user-token", "rotating the user token", _TOKEN
        )
        return answer.token
