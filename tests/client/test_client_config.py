"""shoal.Client without a coordinator: where its URL and token come from, and what it
says when the coordinator is not there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import free_port

import shoal
from shoal._client.config import _parse_flat_toml, profile_path, resolve, write_profile
from shoal._client.http import sse


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SHOAL_* variables and an empty config folder."""
    monkeypatch.delenv("SHOAL_COORDINATOR", raising=False)
    monkeypatch.delenv("SHOAL_TOKEN", raising=False)
    monkeypatch.delenv("SHOAL_CA_CERT", raising=False)
    monkeypatch.delenv("SHOAL_PROFILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)  # no project profile (.shoal/up/profile.toml) above it
    return tmp_path / "config" / "shoal" / "config.toml"


def _write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config" / "shoal" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_arguments_win_over_env_and_env_over_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _write_config(tmp_path, 'coordinator = "http://file:1"\ntoken = "from-file"\n')
    assert resolve() == ("http://file:1", "from-file")
    monkeypatch.setenv("SHOAL_COORDINATOR", "http://env:2/")
    monkeypatch.setenv("SHOAL_TOKEN", "from-env")
    assert resolve() == ("http://env:2", "from-env")
    assert resolve("https://arg:3", "from-arg") == ("https://arg:3", "from-arg")


def test_profiles_written_by_shoal_up_are_found_by_themselves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _write_config(tmp_path, 'coordinator = "http://file:1"\ntoken = "from-file"\n')
    project = tmp_path / "project"
    write_profile(project / ".shoal" / "up" / "profile.toml", "http://up:8750", "from-up", "x")
    write_profile(profile_path("local"), "http://named:9", "from-named")
    for path in (project / ".shoal" / "up" / "profile.toml", profile_path("local")):
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(profile_path("local").parent.stat().st_mode & 0o777) == "0o700"

    assert resolve() == ("http://file:1", "from-file")  # not in the project: the file
    (project / "src" / "deep").mkdir(parents=True)
    for folder in (project, project / "src" / "deep"):  # the project or a folder below it
        monkeypatch.chdir(folder)
        assert resolve() == ("http://up:8750", "from-up")
    monkeypatch.setenv("SHOAL_COORDINATOR", "http://env:2")
    monkeypatch.setenv("SHOAL_TOKEN", "from-env")
    assert resolve() == ("http://env:2", "from-env")  # the environment wins over it
    assert resolve(profile="local") == ("http://named:9", "from-named")  # --profile wins
    monkeypatch.setenv("SHOAL_PROFILE", "local")
    assert resolve() == ("http://named:9", "from-named")
    assert resolve("http://arg:3", "from-arg", profile="local") == ("http://arg:3", "from-arg")


def test_a_profile_token_goes_with_its_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write_config(tmp_path, 'token = "from-file"\n')
    write_profile(tmp_path / ".shoal" / "up" / "profile.toml", "http://up:8750", "from-up")
    assert resolve() == ("http://up:8750", "from-up")
    monkeypatch.setenv("SHOAL_COORDINATOR", "http://env:2")
    assert resolve() == ("http://env:2", "from-up")  # the env gives no token: look on


def test_an_unknown_profile_names_the_known_ones() -> None:
    write_profile(profile_path("local"), "http://named:9", "t")
    with pytest.raises(shoal.ShoalError) as e:
        resolve(profile="lab")
    text = str(e.value)
    assert e.value.code == "client.config"
    assert "no profile 'lab'" in text and "known profiles: local" in text
    with pytest.raises(shoal.ShoalError, match="not a profile name"):
        resolve(profile="../etc")


def test_missing_url_names_shoal_up_and_profiles() -> None:
    with pytest.raises(shoal.ShoalError) as e:
        resolve()
    assert "shoal up" in str(e.value) and "--profile" in str(e.value)


def test_url_from_env_and_token_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write_config(tmp_path, 'token = "tok"\n')
    monkeypatch.setenv("SHOAL_COORDINATOR", "http://127.0.0.1:8750")
    assert resolve() == ("http://127.0.0.1:8750", "tok")


def test_missing_url_says_how_to_set_it() -> None:
    with pytest.raises(shoal.ShoalError) as e:
        shoal.Client()
    text = str(e.value)
    assert e.value.code == "client.config"
    assert "--coordinator" in text and "SHOAL_COORDINATOR" in text and "config.toml" in text


def test_missing_token_says_how_to_set_it() -> None:
    with pytest.raises(shoal.ShoalError) as e:
        shoal.Client("http://127.0.0.1:8750")
    text = str(e.value)
    assert "no user token" in text and "SHOAL_TOKEN" in text and "user-token" in text


def test_url_without_scheme_is_refused() -> None:
    with pytest.raises(shoal.ShoalError, match="https://localhost:8750"):
        shoal.Client("localhost:8750", "t")


def test_bad_config_file_names_the_file(tmp_path: Path) -> None:
    path = _write_config(tmp_path, "coordinator = \n")
    with pytest.raises(shoal.ShoalError) as e:
        shoal.Client()
    assert str(path) in str(e.value) and "not valid TOML" in str(e.value)
    _write_config(tmp_path, "coordinator = 3\n")
    with pytest.raises(shoal.ShoalError, match="not a string"):
        shoal.Client()


def test_flat_toml_fallback_reads_strings() -> None:
    text = "# comment\ncoordinator = \"http://h:1\"\ntoken = 'raw\\x'\n"
    assert _parse_flat_toml(text) == {"coordinator": "http://h:1", "token": "raw\\x"}
    with pytest.raises(ValueError):
        _parse_flat_toml("token = 3\n")


def test_repr_never_shows_the_token() -> None:
    client = shoal.Client("http://127.0.0.1:1", "very-secret")
    assert "very-secret" not in repr(client)
    client.close()


def test_unreachable_coordinator_is_one_clear_error() -> None:
    port = free_port()  # nothing listens on it
    with (
        shoal.Client(f"http://127.0.0.1:{port}", "t", timeout=5) as client,
        pytest.raises(shoal.ShoalError) as e,
    ):
        client.swarms()
    assert e.value.code == "client.unreachable"
    text = str(e.value)
    assert f"http://127.0.0.1:{port} is not reachable" in text
    assert "shoal coordinator start" in text and "shoal up" in text


def test_cli_unreachable_and_unconfigured_print_one_paragraph(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    url = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [sys.executable, "-m", "shoal", "nodes", "--token", "t", "--coordinator", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 2
    assert "is not reachable" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "shoal", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 2
    assert "no coordinator URL given" in out.stderr and "Traceback" not in out.stderr


def test_logs_of_a_missing_folder_ask_the_coordinator(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["SHOAL_COORDINATOR"] = f"http://127.0.0.1:{free_port()}"
    env["SHOAL_TOKEN"] = "t"
    out = subprocess.run(
        [sys.executable, "-m", "shoal", "logs", "abc123"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "logs of swarm abc123" in out.stderr and "not reachable" in out.stderr
    (tmp_path / "empty").mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "shoal", "logs", "empty"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "holds no logs.jsonl" in out.stderr


def test_server_sent_events_are_parsed() -> None:
    lines = [
        ": keep-alive",
        "",
        'data: {"status": "running",',
        'data:  "iteration": 1}',
        "",
        "event: other",
        "data: not json",
        "",
        'data: {"status": "succeeded"}',
        "",
    ]
    assert list(sse(iter(lines))) == [
        {"status": "running", "iteration": 1},
        {"status": "succeeded"},
    ]
