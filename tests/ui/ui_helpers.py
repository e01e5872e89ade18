"""Helpers of the dashboard tests: the test swarm, the CLI as a user runs it, the
sign-in form."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import Page

HERE = Path(__file__).resolve().parent
SWARM = HERE / "swarm" / "swarm.py"
CHROMIUM = os.environ.get("SHOAL_CHROMIUM", "/usr/bin/chromium")


def shoal_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run ``shoal ARGS`` as a user does; its stdout."""
    out = subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def sign_in(page: Page, base: str, token: str) -> None:
    """Sign in through the form (as a person does)."""
    page.goto(f"{base}/ui/login")
    page.fill("#token", token)
    page.click("form.login button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/$"))
