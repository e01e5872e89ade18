"""Seed 002's MapReduce pattern, as the seed writes it: only the import line changed.

The seed uses ``map_module`` and ``reduce_module`` without defining them; they are
defined here: ten mappers (``mapper_0`` ... ``mapper_9``) each count the words of their
share of every node's "texts" folder, and the reducer adds up every mapper's counts.
"""

from shoal import Module, Swarm, Task

map_module = Module(python_program="modules/map.py", datasets=["texts"])
reduce_module = Module(python_program="modules/reduce.py")


class MapReduce(Swarm):
    name = "mapreduce_job"

    def execute(self):
        # Map phase - parallel processing
        mappers = [Task(module=map_module, alias=f"mapper_{i}") for i in range(10)]
        # Reduce phase - aggregation
        reducer = Task(module=reduce_module, method="any", maximum=1, alias="reducer")
        # Connect mappers to reducer
        return reducer(mappers)
