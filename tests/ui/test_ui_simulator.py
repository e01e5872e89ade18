"""The same dashboard for simulator runs, in Debian's chromium (issue #20, Must show):
``shoal simulate --ui`` serves a run live while it goes on and afterwards; ``shoal ui``
serves run folders from their files (and compares them)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port, poll_for
from playwright.sync_api import Browser, Page, expect
from ui_helpers import SWARM, shoal_cli, sign_in

pytestmark = pytest.mark.slow

WAIT_MS = 60_000


class Served:
    """A ``shoal simulate --ui`` or ``shoal ui`` process and what it printed."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **env},
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def printed(self, prefix: str, timeout: float = 60) -> str:
        """The rest of the first line that starts with ``prefix``."""

        def find() -> str | None:
            for line in self.lines:
                if line.startswith(prefix):
                    return line[len(prefix) :].strip()
            if self.proc.poll() is not None:
                raise AssertionError("it exited:\n" + "\n".join(self.lines))
            return None

        return poll_for(find, timeout, f"a line {prefix!r}", explain=lambda: "\n".join(self.lines))

    def interrupt(self) -> int:
        """Ctrl-C, as a terminal sends it; the exit code (bounded)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self._reader.join(10)  # it reads to the end of the pipe
            assert self.proc.stdout is not None
            self.proc.stdout.close()


@contextlib.contextmanager
def served(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Iterator[Served]:
    s = Served(argv, cwd, env or {})
    try:
        yield s
    finally:
        s.interrupt()


def _open(page: Page, served: Served) -> str:
    base = served.printed("dashboard:").removesuffix("/ui/")
    sign_in(page, base, served.printed("sign in with the token:"))
    return base


def test_simulate_ui_is_live_while_the_run_goes_on_and_after(
    browser: Browser, tmp_path: Path
) -> None:
    run = tmp_path / "runs" / "live"
    argv = ["simulate", f"{SWARM}:Watched", "-n", "3", "--run-dir", str(run), "--ui"]
    argv += ["--ui-port", str(free_port()), "--workers", "2"]
    # Slow instances (SHOAL_UI_TEST_DELAY, read by the test swarm): a run to watch.
    with served(argv, tmp_path, {"SHOAL_UI_TEST_DELAY": "1.0"}) as sim:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        base = _open(page, sim)
        page.goto(f"{base}/ui/swarms/live")
        expect(page.locator("#swarm-status")).to_have_text("running")
        expect(page.locator("svg.graph")).to_contain_text("worker")
        page.evaluate("window.__noReload = true")
        # Iterations advance live, then the finished run shows from its files.
        poll_for(
            lambda: int(page.locator("#swarm-iteration").inner_text()) >= 2,
            WAIT_MS / 1000,
            "the page to show iteration 2",
        )
        expect(page.locator("#swarm-status")).to_have_text("succeeded", timeout=WAIT_MS)
        assert page.evaluate("window.__noReload === true"), "the page was reloaded"
        expect(page.locator("ol.timeline li")).to_have_count(6)
        chart = page.locator('figure.chart:has(figcaption:text("accuracy · worker"))')
        expect(chart.locator("canvas")).to_be_visible()
        expect(chart.locator("details.values tbody tr")).to_have_count(6)
        failure = page.locator("details.failure", has_text="node-00001")
        failure.locator("summary").click()
        expect(failure.locator("pre.traceback")).to_contain_text("the disk of this node is full")
        page.select_option("select[name=node]", "node-00002")
        page.select_option("select[name=level]", "info")
        page.click("form.filters button[type=submit]")
        logs = page.locator("table.logs tbody tr")
        expect(logs).to_have_count(6)
        for text in logs.locator("td:nth-child(2)").all_inner_texts():
            assert text == "node-00002"
        page.goto(f"{base}/ui/swarms/live?iteration=1")
        expect(page.locator('table.instances[data-task="worker"]')).to_contain_text("failed")
        assert page.locator("#stop-swarm").count() == 0  # a simulator run is not stopped here
        page.close()
        poll_for(lambda: any("Ctrl-C stops it" in x for x in sim.lines), 30, "the run's end")
    assert sim.proc.returncode is not None


def test_shoal_ui_serves_run_folders_and_compares_them(browser: Browser, tmp_path: Path) -> None:
    runs = []
    for name, delay in (("first", "0"), ("second", "0")):
        run = tmp_path / name
        shoal_cli(
            "simulate", f"{SWARM}:Watched", "-n", "2", "--run-dir", str(run),
            "--executor", "inline",
            env={"SHOAL_UI_TEST_DELAY": delay},
        )  # fmt: skip
        runs.append(str(run))
    argv = ["ui", *runs, "--port", str(free_port())]
    with served(argv, tmp_path) as ui:
        for js in (True, False):
            ctx = browser.new_context(java_script_enabled=js)
            page = ctx.new_page()
            base = _open(page, ui)
            rows = page.locator("tr.swarm-row")
            expect(rows).to_have_count(2)
            expect(page.locator("tr.node-row")).to_have_count(2)
            page.goto(f"{base}/ui/compare")
            page.check('input[value="first"]')
            page.check('input[value="second"]')
            page.fill("#metric", "accuracy")
            page.click("form.compare button[type=submit]")
            figure = page.locator("figure.chart")
            expect(figure.locator("figcaption")).to_have_text("accuracy across swarms")
            expect(figure.locator("details.values thead th")).to_have_count(
                3
            )  # iteration, two swarms
            if js:
                expect(figure.locator("canvas")).to_be_visible()
            page.goto(f"{base}/ui/nodes/node-00000")
            expect(page.locator("dl.facts")).to_contain_text("virtual")
            expect(page.locator("main table")).to_contain_text("worker")
            ctx.close()
