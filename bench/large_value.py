"""A 1 GB result from a task to the coordinator and to a downstream task, on a real
federation (``shoal up``), with each process's peak memory.

The producer task creates a SIZE-byte float32 array and adds it as a result. Its agent
uploads it to the coordinator as a blob. The consumer's agent downloads the blob, and
the consumer task sums it. Each task reports its own peak RSS (``VmHWM``); this script
samples the PSS of the coordinator and the agents throughout. No process should hold the
value twice: the producer holds its array once, and the value is written to its segment
straight from the array. The agents and the coordinator stream it in chunks. The
consumer memory-maps it.

    python bench/large_value.py [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _proc import pss

PRODUCER = """
import numpy as np
from pathlib import Path
from shoal.runtime import Task

def hwm():
    text = Path("/proc/self/status").read_text()
    return int(next(l.split()[1] for l in text.splitlines() if l.startswith("VmHWM"))) * 1024

class Produce(Task):
    def run(self):
        n = self.world.globals["size"] // 4
        a = np.ones(n, dtype=np.float32)
        self.world.results.add("big", a)
        self.world.results.add("hwm", hwm())

def main():
    Produce().run()
"""

CONSUMER = """
import numpy as np
from pathlib import Path
from shoal.runtime import Task

def hwm():
    text = Path("/proc/self/status").read_text()
    return int(next(l.split()[1] for l in text.splitlines() if l.startswith("VmHWM"))) * 1024

class Consume(Task):
    def run(self):
        (value,) = self.world.results.select("big").values()
        self.world.globals["total"] = float(value.sum(dtype=np.float64))
        self.world.globals["hwm"] = hwm()
        self.world.globals["producer_hwm"] = max(
            self.world.results.select("hwm").values())

def main():
    Consume().run()
"""

SWARM = """
from shoal import Module, Swarm, Task

class Big(Swarm):
    max_iterations = 1

    def __init__(self):
        self.set_global("size", {size})
        self.produce = Task(Module("produce.py"), method="any", specified_ids=["node-00000"])
        self.consume = Task(Module("consume.py"), method="any", specified_ids=["node-00001"])

    def execute(self):
        return self.consume(self.produce())
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--size-mb", type=int, default=1024)
    args = p.parse_args(argv)
    size = args.size_mb * 2**20

    import shoal

    with tempfile.TemporaryDirectory(prefix="shoal-large-") as tmp:
        root = Path(tmp)
        (root / "produce.py").write_text(PRODUCER)
        (root / "consume.py").write_text(CONSUMER)
        (root / "swarm.py").write_text(SWARM.format(size=size))
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shoal",
                "up",
                "--nodes",
                "2",
                "--port",
                "0",
                "--state",
                str(root / "up"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            url = token = None
            deadline = time.monotonic() + 120
            assert up.stdout is not None
            for line in up.stdout:
                m = re.search(r"export SHOAL_COORDINATOR=(\S+) SHOAL_TOKEN=(\S+)", line)
                if m:
                    url, token = m.group(1), m.group(2)
                    break
                if time.monotonic() > deadline:
                    break
            if not url or not token:
                raise RuntimeError("shoal up did not become ready")
            threading.Thread(target=lambda: [None for _ in up.stdout or []], daemon=True).start()
            peaks: dict[str, int] = {}
            sampling = True

            def sample() -> None:
                while sampling:
                    for line in subprocess.run(
                        ["ps", "-eo", "pid,args"], capture_output=True, text=True
                    ).stdout.splitlines()[1:]:
                        pid_text, _, cmd = line.strip().partition(" ")
                        if str(root) not in cmd:
                            continue
                        kind = (
                            "coordinator"
                            if "coordinator" in cmd
                            else "agent"
                            if "node" in cmd and "task_runner" not in cmd
                            else "task"
                            if "task_runner" in cmd
                            else None
                        )
                        if kind:
                            peaks[kind] = max(peaks.get(kind, 0), pss(int(pid_text)))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.monotonic()
            with shoal.Client(url, token, timeout=600) as client:
                swarm_id = client.deploy(str(root / "swarm.py"))
                status = client.wait(swarm_id, timeout=900)
                wall = time.monotonic() - t0
                sampling = False
                sampler.join()
                if status.status != "succeeded":
                    print(f"swarm {status.status}: {status.reason}")
                    return 1
                total = client.get_global(swarm_id, "total")
                consumer_hwm = client.get_global(swarm_id, "hwm")
                producer_hwm = client.get_global(swarm_id, "producer_hwm")
        finally:
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)

    mib = 2**20
    ok = total == size // 4
    print(
        f"value: {size / mib:.0f} MiB float32, task -> coordinator -> task in {wall:.1f}s; "
        f"sum {'correct' if ok else 'WRONG'}"
    )
    print("| process | peak memory (MiB) | x value |")
    print("|---|---|---|")
    print(f"| producer task (VmHWM) | {producer_hwm / mib:.0f} | {producer_hwm / size:.2f} |")
    print(
        f"| consumer task (VmHWM, mapped file pages included) | {consumer_hwm / mib:.0f} | "
        f"{consumer_hwm / size:.2f} |"
    )
    for kind in ("agent", "coordinator"):
        if kind in peaks:
            print(f"| {kind} (peak PSS) | {peaks[kind] / mib:.0f} | {peaks[kind] / size:.2f} |")
    held_twice = max(producer_hwm, consumer_hwm) >= 1.9 * size
    return 0 if ok and not held_twice else 1


if __name__ == "__main__":
    sys.exit(main())
