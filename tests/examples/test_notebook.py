"""examples/notebook.ipynb runs from top to bottom (a real kernel, no network) and shows
the metrics table and the accuracy curve."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_notebook_runs_and_plots_the_curve(monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")  # nbclient and ipykernel: the dev extra
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's paths, no warning
    notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(EXAMPLES)}},  # as Jupyter runs it: in its folder
    ).execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot"
    tables = [o["data"]["text/plain"] for o in outputs if "text/plain" in o.get("data", {})]
    assert any("succeeded" in t for t in tables), tables
    assert any("val_accuracy" in t for t in tables), tables
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    final = float(printed.split("final validation accuracy: ")[1].split()[0])
    assert final >= 0.8, printed
