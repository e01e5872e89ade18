"""``python -m shoal._node --config node.toml``: run a node agent without the CLI."""

from __future__ import annotations

import argparse
import logging

from shoal._node.agent import run


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run the agent until SIGINT / SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m shoal._node", description=__doc__)
    p.add_argument("--config", required=True, help="the node's TOML file")
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    # httpx logs every request at INFO; that is noise (and URLs carry instance ids).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    run(a.config)


if __name__ == "__main__":
    main()
