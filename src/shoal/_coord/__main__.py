"""``python -m shoal._coord --state DIR [--db URL] [--port N] ...``: serve a coordinator
without the CLI (tests and scripts)."""

from __future__ import annotations

import argparse
import logging

from shoal._coord.app import DEFAULT_SWARM_QUOTA_BYTES
from shoal._coord.ratelimit import DEFAULT_MAX_FAILURES, DEFAULT_WINDOW_S
from shoal._coord.server import DEFAULT_PORT, serve


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until interrupted."""
    p = argparse.ArgumentParser(prog="python -m shoal._coord", description=__doc__)
    p.add_argument("--state", required=True, help="state folder (tokens, database, blobs)")
    p.add_argument("--db", default=None, help="store URL (default: SQLite in --state)")
    p.add_argument(
        "--blobs", default=None, help="blob folder or s3://bucket/prefix (default: STATE/blobs)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--tls-cert", default=None)
    p.add_argument("--tls-key", default=None)
    p.add_argument("--max-request-mb", type=float, default=64.0)
    p.add_argument("--heartbeat-timeout", type=float, default=15.0)
    p.add_argument(
        "--auth-max-failures",
        type=int,
        default=DEFAULT_MAX_FAILURES,
        help="failed authentications per source and window before 429 (0: no limit)",
    )
    p.add_argument(
        "--auth-window", type=float, default=DEFAULT_WINDOW_S, help="that window, in seconds"
    )
    p.add_argument(
        "--swarm-quota-mb",
        type=float,
        default=DEFAULT_SWARM_QUOTA_BYTES / 2**20,
        help="the most MiB of values (blobs) one swarm may store (0: no bound)",
    )
    p.add_argument(
        "--advertise",
        default=None,
        help="the URL clients reach this coordinator at (PostgreSQL with several "
        "coordinators: standbys name it; default: http(s)://HOST:PORT)",
    )
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    serve(
        a.db,
        a.state,
        a.blobs,
        a.host,
        a.port,
        a.tls_cert,
        a.tls_key,
        max_request_mb=a.max_request_mb,
        heartbeat_timeout_s=a.heartbeat_timeout,
        log_level=a.log_level,
        auth_max_failures=a.auth_max_failures,
        auth_window_s=a.auth_window,
        swarm_quota_mb=a.swarm_quota_mb,
        advertise=a.advertise,
    )


if __name__ == "__main__":
    main()
