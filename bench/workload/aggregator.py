"""Benchmark server: the equal-weight mean of every client's vector, streamed.

A running sum holds one model in memory, whatever the number of clients. With the
global ``measure_memory`` set, it samples its own process's PSS while it aggregates and
publishes the peak above its starting point as the result ``peak_bytes``.
"""

from pathlib import Path

import numpy as np

from shoal.runtime import Task


def _pss() -> int:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


class Aggregator(Task):
    def run(self) -> None:
        measure = self.world.globals.get("measure_memory", False)
        base = peak = _pss() if measure else 0
        total = None
        n = 0
        for _, w in self.world.results.stream("w"):
            if total is None:
                total = np.array(w, dtype=np.float32)
            else:
                total += w
            n += 1
            if measure and n % 10 == 0:
                peak = max(peak, _pss())
        assert total is not None, "no client results"
        total /= n
        self.world.globals["w"] = total
        if measure:
            peak = max(peak, _pss())
            self.world.results.add("peak_bytes", peak - base)
        self.logger.metric("clients", n)


def main() -> None:
    Aggregator().run()
