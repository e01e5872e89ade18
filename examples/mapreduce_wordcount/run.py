"""Count the words of the files in data/ with MapReduce on simulated nodes.

Checks the result against a count of the same files on this one machine.

    python examples/mapreduce_wordcount/run.py [--nodes 4] [--seed 0]

Exits 0 and prints OK when the counts agree; prints the differences and exits 1 if not.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import shoal

# This folder on the import path, however the script is started.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from modules.mapper import count_words  # the one definition of a word
from swarm import WordCount

DATA = Path(__file__).resolve().parent / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4, help="simulated nodes (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the file split")
    args = parser.parse_args(argv)

    # The folder's files are dealt out over the nodes: each node gets a folder.
    try:
        run = shoal.simulate(
            WordCount(),
            nodes=args.nodes,
            datasets={"texts": DATA},
            partition="iid",
            seed=args.seed,
        )
    except shoal.SwarmFailedError as failed:  # every failure's node and traceback
        print(failed, file=sys.stderr)
        return 1
    distributed = Counter(run.globals["counts"])

    local: Counter[str] = Counter()
    for path in sorted(p for p in DATA.rglob("*") if p.is_file()):
        local.update(count_words(path.read_text(encoding="utf-8")))

    top = sorted(distributed.items(), key=lambda item: (-item[1], item[0]))[:10]
    print(f"{sum(distributed.values())} words, {len(distributed)} distinct")
    print("top 10: " + ", ".join(f"{word} {n}" for word, n in top))
    if distributed == local:
        print("OK: the distributed count equals the one-machine count")
        return 0
    for word in sorted(set(distributed) | set(local)):
        if distributed[word] != local[word]:
            print(f"  {word!r}: distributed {distributed[word]}, one machine {local[word]}")
    print("MISMATCH")
    return 1


if __name__ == "__main__":
    sys.exit(main())
