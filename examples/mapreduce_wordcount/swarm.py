"""Word count as MapReduce (seed 002's pattern): the swarm definition.

Every node that holds a "texts" dataset (a folder of .txt files) runs a mapper that
counts its own words; one reducer merges the counts. One iteration is the whole job.
"""

from __future__ import annotations

from shoal import Module, Swarm, Task


class WordCount(Swarm):
    """Count the words of texts spread over many nodes."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "mapreduce_wordcount"
        self.max_iterations = 1

        self.mappers = Task(
            Module(python_program="modules/mapper.py", image="python", datasets=["texts"]),
            method="all",
            alias="mapper",
        )
        self.reducer = Task(
            Module(python_program="modules/reducer.py", image="python"),
            method="any",
            maximum=1,
            alias="reducer",
        )

    def execute(self) -> Task:
        """Every mapper feeds the single reducer."""
        return self.reducer(self.mappers)
