"""`shoal nodes` shows what each node advertised; `shoal status` why a task waits."""

from __future__ import annotations

from rich.console import Console

from shoal import NodeRecord, SwarmStatus, TaskCounts
from shoal._cli.render import nodes_table, status_view


def _text(renderable: object) -> str:
    console = Console(record=True, width=200)
    console.print(renderable)
    return console.export_text()


def test_nodes_show_cpus_memory_and_detected_gpus() -> None:
    nodes = [
        NodeRecord("gpu", True, (), True, None, 0.0, 0, 16.0, 64 * 2**30, 2, 24 * 2**30),
        NodeRecord("cpu", True, (), False, None, 0.0, 0, 4.0, 8 * 2**30, 0, None),
        NodeRecord("old", False, (), True, None, 0.0, 0),  # advertised nothing
    ]
    lines = {line.split()[0]: line for line in _text(nodes_table(nodes)).splitlines() if line}
    assert "16" in lines["gpu"] and "64.0Gi" in lines["gpu"] and "2 (24.0Gi)" in lines["gpu"]
    assert "8.0Gi" in lines["cpu"] and " no " in lines["cpu"]
    assert lines["old"].count("?") == 2 and " yes " in lines["old"]


def test_status_shows_why_a_task_waits() -> None:
    st = SwarmStatus(
        "s",
        "demo",
        "running",
        0,
        "",
        1.0,
        tasks={"t": TaskCounts()},
        waiting={"t": "node small: has 8Gi memory, needs 16Gi"},
    )
    text = " ".join(_text(status_view(st)).split())
    assert "waiting t for an eligible node: node small: has 8Gi memory, needs 16Gi" in text
