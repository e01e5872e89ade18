"""The same events give the same instructions, in this process and in another."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from engine_harness import finished, runs, scripted

from shoal._engine import Engine
from shoal._engine.messages import SwarmFinished

HERE = Path(__file__).parent


def test_the_same_driver_gets_the_same_instructions() -> None:
    log = scripted(7).log
    assert len(runs(log)) > 50
    assert {f.swarm_id for f in finished(log)} == {"a", "b"}
    assert scripted(7).log == log
    assert scripted(8).log != log


def test_replaying_the_event_log_rebuilds_the_engine() -> None:
    h = scripted(11)
    replayed = Engine()
    assert replayed.handle_many(h.events) == h.log
    replayed.validate()
    for r in runs(h.log):
        assert replayed.story(r.instance_id) == h.engine.story(r.instance_id)
        assert replayed.instance(r.instance_id) == h.engine.instance(r.instance_id)
    assert replayed.swarm("a") == h.engine.swarm("a")


def test_instructions_do_not_depend_on_the_hash_seed() -> None:
    code = "import engine_harness as e; print(repr(e.scripted(5).log))"
    outputs = set()
    for hash_seed in ("0", "1", "12345"):
        env = {
            **os.environ,
            "PYTHONHASHSEED": hash_seed,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout)
    (out,) = outputs
    assert "RunInstance" in out and SwarmFinished.__name__ in out
