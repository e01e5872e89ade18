"""Identities: ``shoal coordinator token [create|list|revoke]``, ``shoal coordinator node
revoke|reset``, ``shoal coordinator user-token rotate`` (the operator's, on the
coordinator's machine: they read its state folder) and ``shoal node rotate-credential``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from shoal._cli.app import err, fail
from shoal._cli.services import DEFAULT_STATE, coordinator_app, load_service, node_app, tokens
from shoal._errors import ShoalError

if TYPE_CHECKING:
    from shoal._client.operator import Operator

out = Console()

token_app = typer.Typer(
    help="The join tokens nodes enrol with. Without a command: print the default one.",
    invoke_without_command=True,
)
node_admin_app = typer.Typer(help="Revoke or reset a node's identity.", no_args_is_help=True)
user_token_app = typer.Typer(help="The user API token.", no_args_is_help=True)
coordinator_app.add_typer(token_app, name="token")
coordinator_app.add_typer(node_admin_app, name="node")
coordinator_app.add_typer(user_token_app, name="user-token")

State = Annotated[Path, typer.Option(help="The coordinator's state folder.")]
Url = Annotated[
    str | None,
    typer.Option(
        "--coordinator",
        help="The coordinator's URL (default: where it said it listens, STATE/coordinator.json).",
        show_default=False,
    ),
]
Ca = Annotated[
    Path | None,
    typer.Option(
        "--ca",
        help="PEM file of the CA of its TLS certificate (default: its own).",
        show_default=False,
    ),
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 1h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _state_dir(state: Path) -> Path:
    if not state.is_dir():
        fail(
            f"{state} is not a coordinator state folder; give the --state of "
            "`shoal coordinator start`"
        )
    return state.resolve()


def _operator(state: Path, url: str | None, ca: Path | None) -> Operator:
    from shoal._client.operator import Operator  # httpx: only for the commands that need it

    try:
        return Operator.of_state(_state_dir(state), url, ca)
    except ShoalError as e:
        fail(e)


def _when(t: float | None, never: str = "never") -> str:
    return never if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


# ----------------------------------------------------------------------- join tokens
@token_app.callback()
def token_default(ctx: typer.Context, state: State = DEFAULT_STATE) -> None:
    """Print the default join token (keep it secret); the commands manage the others."""
    if ctx.invoked_subcommand is not None:
        return
    join, _ = tokens(_state_dir(state))
    typer.echo(join)


@token_app.command("create")
def token_create(
    state: State = DEFAULT_STATE,
    expires: Annotated[
        str | None,
        typer.Option(
            help="It stops working after this long: 90s, 15m, 1h, 7d.", show_default=False
        ),
    ] = None,
    uses: Annotated[
        int | None,
        typer.Option(min=1, help="It enrols at most this many nodes.", show_default=False),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(
            help="It enrols only this node id (and may enrol it again: a replacement).",
            show_default=False,
        ),
    ] = None,
    coordinator: Url = None,
    ca: Ca = None,
) -> None:
    """Make a join token; print its secret (shown once: the coordinator keeps a hash)."""
    try:
        expires_in_s = None if expires is None else parse_duration(expires)
    except ValueError as e:
        fail(f"--expires: {e}")
    with _operator(state, coordinator, ca) as op:
        try:
            made = op.create_join_token(expires_in_s, uses, node)
        except ShoalError as e:
            fail(e)
    typer.echo(made.token)
    err.print(
        f"join token {made.token_id}: node {made.node_id or 'any'}, "
        f"uses {made.max_uses or 'any'}, expires {_when(made.expires)}",
        highlight=False,
    )


@token_app.command("list")
def token_list(state: State = DEFAULT_STATE, coordinator: Url = None, ca: Ca = None) -> None:
    """List the join tokens (never their secrets)."""
    with _operator(state, coordinator, ca) as op:
        try:
            found = op.join_tokens()
        except ShoalError as e:
            fail(e)
    table = Table("id", "state", "node", "uses", "expires", "created")
    for t in found:
        limit = "" if t.max_uses is None else f"/{t.max_uses}"
        table.add_row(
            t.token_id, t.state, t.node_id or "any", f"{t.uses}{limit}", _when(t.expires),
            _when(t.created),
        )  # fmt: skip
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (see `token list`).")],
    state: State = DEFAULT_STATE,
    coordinator: Url = None,
    ca: Ca = None,
) -> None:
    """Revoke a join token (nodes that enrolled with it keep their credentials)."""
    with _operator(state, coordinator, ca) as op:
        try:
            op.revoke_join_token(token_id)
        except ShoalError as e:
            fail(e)
    typer.echo(f"join token {token_id} revoked")


# ----------------------------------------------------------------------------- nodes
NodeId = Annotated[str, typer.Argument(help="The node's id.")]


@node_admin_app.command("revoke")
def node_revoke(
    node_id: NodeId, state: State = DEFAULT_STATE, coordinator: Url = None, ca: Ca = None
) -> None:
    """End a node's credential at once (its running instances count as lost); its id
    enrols again only with a token bound to it (`token create --node ID`)."""
    with _operator(state, coordinator, ca) as op:
        try:
            answer = op.revoke_node(node_id)
        except ShoalError as e:
            fail(e)
    typer.echo(f"node {node_id} revoked ({answer.lost_instances} running instances lost)")


@node_admin_app.command("reset")
def node_reset(
    node_id: NodeId, state: State = DEFAULT_STATE, coordinator: Url = None, ca: Ca = None
) -> None:
    """End a node's credential at once (its running instances count as lost) and let
    the next enrolment with a join token take its id."""
    with _operator(state, coordinator, ca) as op:
        try:
            answer = op.reset_node(node_id)
        except ShoalError as e:
            fail(e)
    typer.echo(f"node {node_id} reset ({answer.lost_instances} running instances lost)")


# ------------------------------------------------------------------------ user token
@user_token_app.command("rotate")
def user_token_rotate(state: State = DEFAULT_STATE, coordinator: Url = None, ca: Ca = None) -> None:
    """Make a new user API token and print it; the old one stops working at once."""
    with _operator(state, coordinator, ca) as op:
        try:
            token = op.rotate_user_token()
        except ShoalError as e:
            fail(e)
    typer.echo(token)


# ---------------------------------------------------------------------- node agent
@node_app.command("rotate-credential")
def node_rotate_credential(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The node's TOML config file.")
    ] = Path("node.toml"),
) -> None:
    """Give this node a new credential (the old one stops working); a running agent
    picks it up from its state folder."""
    if not config.is_file():
        fail(f"node config {config} does not exist; give the --config of `shoal node start`")
    identity = load_service("shoal._node.identity", "node agent")
    try:
        node_id = identity.rotate_credential(config)
    except ShoalError as e:
        fail(e)
    typer.echo(f"node {node_id} has a new credential")
