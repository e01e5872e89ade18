"""``shoal new``: every template makes a project whose own tests pass and whose README
commands run, as a user runs them (subprocesses in a fresh folder)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shoal._cli.new import TEMPLATES, render

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# The README's `shoal simulate` line of each template, made short (fewer nodes/rounds).
SIMULATE = {
    "fedavg-numpy": ["--nodes", "3", "--dataset", "digits=data/digits.npz", "--partition",
                     "dirichlet:0.5", "--max-iterations", "3"],
    "fedavg-torch": ["--nodes", "2", "--dataset", "digits=data/digits.npz", "--partition",
                     "iid", "--max-iterations", "2", "--workers", "1"],
    "analytics": ["--nodes-dir", "nodes"],
}  # fmt: skip


def run(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_a_new_project_passes_its_own_tests_and_runs_as_its_readme_says(
    template: str, tmp_path: Path
) -> None:
    if template == "fedavg-torch":
        pytest.importorskip("torch")  # in the dev extra: CI runs this
    made = run(["-m", "shoal", "new", "my-study", "--template", template], tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "my-study"
    for name in ("swarm.py", "README.md", "make_data.py", "tests/test_swarm.py", ".gitignore"):
        assert (project / name).is_file(), name
        assert f"my-study/{name}" in made.stdout
    texts = [p.read_text() for p in project.rglob("*") if p.is_file()]
    assert not any("{{project}}" in t for t in texts)
    assert (project / "README.md").read_text().startswith("# my-study\n")
    assert f"shoal simulate swarm.py {SIMULATE[template][0]}" in (project / "README.md").read_text()

    tested = run(["-m", "pytest", "-q", "-p", "no:cacheprovider"], project)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert " passed" in tested.stdout and "skipped" not in tested.stdout

    data = run(["make_data.py"], project)
    assert data.returncode == 0, data.stderr
    simulated = run(["-m", "shoal", "simulate", "swarm.py", *SIMULATE[template]], project)
    assert simulated.returncode == 0, simulated.stdout + simulated.stderr
    assert "succeeded" in simulated.stdout


def test_the_torch_template_is_the_torch_example() -> None:
    rendered = render("fedavg-torch", "x")
    modules = {k: v for k, v in rendered.items() if k.startswith("modules/")}
    assert len(modules) == 4
    for rel, text in modules.items():
        assert text == (EXAMPLES / "fedavg_torch" / rel).read_text(), rel


def test_unknown_templates_and_taken_folders_are_refused(tmp_path: Path) -> None:
    unknown = run(["-m", "shoal", "new", "p", "--template", "fedavg-jax"], tmp_path)
    assert unknown.returncode == 2
    assert "no template 'fedavg-jax'" in unknown.stderr
    assert all(name in unknown.stderr for name in TEMPLATES)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    taken = run(["-m", "shoal", "new", "taken"], tmp_path)
    assert taken.returncode == 2 and "not an empty folder" in taken.stderr
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["notes.txt"]
