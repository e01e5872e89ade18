"""Regenerate the dashboard screenshots in docs/img/ (shown in README.md and
docs/dashboard.md).

Runs the dashboard tests' swarm twice in the simulator (inline, a few seconds), serves
both run folders with ``shoal ui``'s server and photographs each page in Debian's
chromium through Playwright: at 1280x800 and, for the swarm page, at phone width.

    python tools/dashboard_screenshots.py            # needs /usr/bin/chromium
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img"
SWARM = ROOT / "tests" / "ui" / "swarm" / "swarm.py"
CHROMIUM = os.environ.get("SHOAL_CHROMIUM", "/usr/bin/chromium")
NODE_BEATS_S = 15.0  # the node agent beats this long before its page is photographed


def simulate(run_dir: Path, nodes: int, seed: int) -> None:
    """One simulator run of the test swarm into ``run_dir``."""
    argv = [sys.executable, "-m", "shoal", "simulate", f"{SWARM}:Watched", "-n", str(nodes)]
    argv += ["--run-dir", str(run_dir), "--executor", "inline", "--seed", str(seed)]
    env = {**os.environ, "SHOAL_UI_TEST_DELAY": "0.01"}
    subprocess.run(argv, check=True, capture_output=True, env=env, timeout=300)


def node_shot(browser: Browser, root: Path) -> None:
    """The node page from a real coordinator with one node agent (a simulator's virtual
    nodes have no heartbeats): its facts and its heartbeat history."""
    sys.path.insert(0, str(ROOT / "tests"))
    from deploy_harness import deployment, wait_nodes

    root.mkdir()
    with deployment(root) as d:
        coord = d.coordinator(heartbeat_timeout=5.0)
        d.node(coord, "site-a")  # beats every 0.5 s (the harness's agent config)
        with coord.user() as user:
            wait_nodes(user, ["site-a"])
        time.sleep(NODE_BEATS_S)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(coord.url + "/ui/login")
        page.fill("#token", coord.user_token)
        page.click("form.login button[type=submit]")
        page.wait_for_url(coord.url + "/ui/")
        page.goto(coord.url + "/ui/nodes/site-a")
        page.wait_for_timeout(400)
        page.screenshot(path=str(OUT / "dashboard-node.png"), full_page=True)
        page.close()


def main() -> None:
    """Write docs/img/dashboard-*.png."""
    from shoal._ui.serve import FolderServer

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [Path(tmp) / "fedavg-5-nodes", Path(tmp) / "fedavg-8-nodes"]
        simulate(runs[0], 5, 0)
        simulate(runs[1], 8, 1)
        server = FolderServer(runs)
        url = server.start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                desk = browser.new_page(viewport={"width": 1280, "height": 800})
                desk.goto(url + "login")
                desk.fill("#token", server.token)
                desk.click("form.login button[type=submit]")
                desk.wait_for_url(url)
                shots = {
                    "overview": url,
                    "swarm": url + "swarms/fedavg-5-nodes",
                    "compare": url + "compare?swarm=fedavg-5-nodes&swarm=fedavg-8-nodes"
                    "&metric=accuracy",
                }
                for name, page_url in shots.items():
                    desk.goto(page_url)
                    desk.wait_for_timeout(400)  # the charts draw after load
                    desk.screenshot(path=str(OUT / f"dashboard-{name}.png"))
                desk.goto(url + "swarms/fedavg-5-nodes#metrics")
                desk.wait_for_timeout(400)
                desk.screenshot(path=str(OUT / "dashboard-swarm-metrics.png"))
                phone = browser.new_page(viewport={"width": 390, "height": 844})
                phone.context.add_cookies(desk.context.cookies())
                phone.goto(url + "swarms/fedavg-5-nodes")
                phone.wait_for_timeout(400)
                phone.screenshot(path=str(OUT / "dashboard-swarm-phone.png"))
                node_shot(browser, Path(tmp) / "deployment")
                browser.close()
        finally:
            server.stop()
    for png in sorted(OUT.glob("dashboard-*.png")):
        print(f"{png.relative_to(ROOT)}: {png.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
