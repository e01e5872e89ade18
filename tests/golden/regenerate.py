"""Rewrite the golden files from what this version of shoal writes.

Usage (from anywhere)::

    python tests/golden/regenerate.py           # say which golden files differ; change nothing
    python tests/golden/regenerate.py --write   # rewrite them

Rewrite them only together with a deliberate format change, and bump that format's
version with it (see README.md here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from golden_cases import (
    CODEC_FILE,
    EVENTS_FILE,
    PLAN_FILE,
    PLAN_V1_FILE,
    export_plan,
    render_codec,
    render_events,
)

from shoal._plan import load_plan


def rendered() -> dict[Path, str]:
    """Each golden file's text, as this shoal writes it."""
    # The event log's golden embeds the version-1 plan, which is kept as it was: the
    # log format did not change when the plan's did.
    v1 = load_plan(PLAN_V1_FILE.read_text(encoding="utf-8"))
    return {
        PLAN_FILE: export_plan(),
        EVENTS_FILE: render_events(v1),
        CODEC_FILE: render_codec(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="Rewrite shoal's golden format files.")
    parser.add_argument("--write", action="store_true", help="rewrite the files that differ")
    args = parser.parse_args()
    stale = 0
    for path, text in rendered().items():
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old == text:
            print(f"unchanged  {path.name}")
            continue
        stale += 1
        if args.write:
            path.write_text(text, encoding="utf-8")
            print(f"rewrote    {path.name}")
        else:
            print(f"differs    {path.name}  (rerun with --write to rewrite it)")
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    raise SystemExit(main())
