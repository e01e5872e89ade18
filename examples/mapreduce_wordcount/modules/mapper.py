"""Map step: count the words in every file of this node's "texts" folder.

A word is a run of the letters a-z after lowercasing, possibly joined by apostrophes
("don't", "mother's" are one word each); everything else (digits, punctuation,
whitespace, other characters) separates words. Files are read as UTF-8.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from shoal.runtime import Task

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def count_words(text: str) -> Counter[str]:
    """Word counts of one text, by the definition above."""
    return Counter(WORD.findall(text.lower()))


class Mapper(Task):
    def run(self) -> None:
        folder: Path = self.local.get_dataset("texts")  # a folder: its read-only path
        counts: Counter[str] = Counter()
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for path in files:
            counts.update(count_words(path.read_text(encoding="utf-8")))
        self.world.results.add("counts", dict(counts))
        self.logger.info(f"{len(files)} files, {sum(counts.values())} words")


def main() -> None:
    Mapper().run()
