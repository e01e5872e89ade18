"""``python -m shoal._node --config node.toml``: run a node agent without the CLI."""

from __future__ import annotations

import argparse
import logging
import sys

from shoal._errors import ShoalError
from shoal._node.agent import run


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run the agent until SIGINT / SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m shoal._node", description=__doc__)
    p.add_argument("--config", required=True, help="the node's TOML file")
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        run(a.config)
    except ShoalError as e:  # one readable paragraph, not a traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
