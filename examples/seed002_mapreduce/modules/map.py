"""Map step: ``mapper_<i>`` counts the words of every tenth file (from the i-th) of this
node's "texts" folder, so the ten mappers on a node share its files without overlap.

A word is a run of the letters a-z after lowercasing, possibly joined by apostrophes.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from shoal.runtime import Task

#: The seed declares ten mappers (``range(10)``).
MAPPERS = 10
WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def count_words(text: str) -> Counter[str]:
    """Word counts of one text, by the definition above."""
    return Counter(WORD.findall(text.lower()))


class Map(Task):
    def run(self) -> None:
        shard = int(self.world.alias.rsplit("_", 1)[1])
        folder: Path = self.local.get_dataset("texts")  # a folder: its read-only path
        files = sorted(p for p in folder.rglob("*") if p.is_file())[shard::MAPPERS]
        counts: Counter[str] = Counter()
        for path in files:
            counts.update(count_words(path.read_text(encoding="utf-8")))
        self.world.results.add("counts", dict(counts))


def main() -> None:
    Map().run()
