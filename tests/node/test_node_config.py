"""The node config: every problem named with its key and its fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shoal._errors import ShoalError
from shoal._node.config import load_config, parse_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_a_valid_config_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "data.npy").write_bytes(b"")
    (tmp_path / "token").write_text("secret\n")
    cfg = load_config(
        _write(
            tmp_path,
            'node_id = "site-a"\ncoordinator = "https://c:8750"\n'
            'join_token_file = "token"\nstate_dir = "state"\n'
            '[datasets]\nmnist = "data.npy"\n[limits]\nmax_concurrent = 2\nmemory_mb = 512\n',
        )
    )
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.datasets == {"mnist": tmp_path / "data.npy"}
    assert cfg.read_join_token() == "secret"
    assert cfg.limits.max_concurrent == 2 and cfg.limits.memory_mb == 512
    assert cfg.interpreter("python") == Path(sys.executable)  # the default image
    assert cfg.interpreter("other") is None
    assert cfg.executor == "auto"  # bwrap where it works, else process


def test_every_problem_is_reported_with_its_key_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ShoalError) as err:
        parse_config(
            {
                "node_id": "bad id!",
                "state_dir": "s",
                "heartbeat_interval_s": 0,
                "colour": "blue",
                "limits": {"max_concurrent": 0},
            },
            tmp_path,
        )
    text = str(err.value)
    assert err.value.code == "node.config"
    assert "node_id:" in text and 'node_id = "site-a"' in text
    assert "coordinator: missing" in text and "https://coord:8750" in text
    assert "heartbeat_interval_s" in text
    assert "colour: unknown key" in text
    assert "limits.max_concurrent" in text


def test_missing_paths_are_named(tmp_path: Path) -> None:
    with pytest.raises(ShoalError) as err:
        parse_config(
            {
                "node_id": "n",
                "coordinator": "http://c",
                "state_dir": "s",
                "datasets": {"mnist": "nope.npy"},
                "images": {"py": "no-venv"},
            },
            tmp_path,
        )
    text = str(err.value)
    assert f"datasets.mnist: {tmp_path / 'nope.npy'} does not exist" in text
    assert "images.py" in text and "bin/python" in text


def test_unreadable_or_invalid_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(ShoalError, match="cannot read node config"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ShoalError, match="not valid TOML"):
        load_config(_write(tmp_path, "node_id = \n"))


def test_dataset_names_have_the_plan_character_set(tmp_path: Path) -> None:
    """Issue #14, point 5: a node cannot offer a dataset no plan could ask for."""
    (tmp_path / "d.npy").write_bytes(b"")
    base = {"node_id": "n", "coordinator": "http://c", "state_dir": "s"}
    for bad in ("../up", "a/b", "with space", "", ".hidden"):
        with pytest.raises(ShoalError) as err:
            parse_config({**base, "datasets": {bad: "d.npy"}}, tmp_path)
        text = str(err.value)
        assert f"datasets.{bad}" in text and "letters, digits" in text, text
    ok = parse_config({**base, "datasets": {"mnist-v1.2_x": "d.npy"}}, tmp_path)
    assert list(ok.datasets) == ["mnist-v1.2_x"]


def test_node_ids_and_dataset_names_match_the_plan_schema() -> None:
    from shoal._node import config
    from shoal._plan import NAME_PATTERN

    assert config._NODE_ID == NAME_PATTERN
