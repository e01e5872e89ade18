"""The README's ``node.toml`` works as written: in a folder holding the files it names
(as the README says), the node's own config loader accepts it unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from helpers import ROOT

from shoal._node.config import load_config


def _readme_node_toml() -> str:
    readme = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "node_id" in b]
    assert block.startswith("# node.toml")
    return block


def test_the_readme_node_toml_loads_as_written(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(_readme_node_toml())
    (tmp_path / "join-token").write_text("the-join-token\n")  # shoal coordinator token > join-token
    np.savez(tmp_path / "digits.npz", X=np.zeros((2, 64)), y=np.zeros(2))
    cfg = load_config(path)
    assert cfg.node_id == "hospital-a"
    assert cfg.read_join_token() == "the-join-token"
    assert cfg.datasets == {"digits": tmp_path / "digits.npz"}
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.interpreter("python") is not None and cfg.interpreter("python").exists()
    assert (cfg.limits.max_concurrent, cfg.limits.memory_mb) == (4, 4096)
