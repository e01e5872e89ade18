"""Write docs/errors.md from the error-code registry (``shoal._codes.CODES``).

Usage: ``python tools/errors_doc.py [--write]``: without ``--write`` it prints the page;
``tests/test_error_codes.py`` checks that docs/errors.md is what it prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shoal._codes import CODES

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"

HEAD = """\
# Error codes

Every error shoal raises on purpose is a `ShoalError` with a stable `code`, a message
naming the object, and a `hint` saying what to do next. The coordinator answers errors
as `{"error": {"code", "message", "hint"}}` with the same codes, and a swarm's
validation reports each problem with a code of its own. A part in angle brackets is a
family (`http.<status>` stands for `http.404`, ...).

This page is generated from `shoal._codes.CODES` by `python tools/errors_doc.py --write`;
`tests/test_error_codes.py` fails if a code given in the source is missing there, if a
code there is given nowhere, or if this page is out of date.
"""


def render() -> str:
    """The page, grouped by the part of each code before its first dot."""
    groups: dict[str, list[str]] = {}
    for code in sorted(CODES):
        groups.setdefault(code.split(".", 1)[0], []).append(code)
    out = [HEAD]
    for group, codes in groups.items():
        out.append(f"\n## {group}\n\n| Code | Meaning |\n| --- | --- |\n")
        out.extend(f"| `{c}` | {_cell(CODES[c])} |\n" for c in codes)
    return "".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {DOC}")
    args = parser.parse_args()
    text = render()
    if args.write:
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC} ({len(CODES)} codes)")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
