"""The dashboard in Debian's chromium against a real coordinator with two real node
agents on loopback (issue #20, Must show): sign in, see the nodes, deploy a swarm from
the CLI and watch it progress without a reload, open a failure's traceback, filter the
logs, see the accuracy chart grow, stop a swarm from the page (by keyboard); and read
every page with JavaScript off and at phone width."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from deploy_harness import Coordinator, deployment, wait_nodes, wait_status
from helpers import poll_for
from playwright.sync_api import Browser, Page, expect
from ui_helpers import SWARM, shoal_cli, sign_in

pytestmark = pytest.mark.slow

NODES = ["site-a", "site-b"]  # site-b's worker fails in iteration 1 (tests/ui/swarm)
WAIT_MS = 60_000


@dataclass
class Site:
    coord: Coordinator
    swarm_id: str = ""  # the watched swarm, once deployed


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with deployment(tmp_path_factory.mktemp("ui-coord")) as d:
        coord = d.coordinator(heartbeat_timeout=5.0)
        for n in NODES:
            d.node(coord, n)
        with coord.user() as user:
            wait_nodes(user, NODES)
        yield Site(coord)


def _deploy(coord: Coordinator, target: str) -> str:
    out = shoal_cli(
        "deploy", target, "--coordinator", coord.url, "--token", coord.user_token
    ).strip()
    assert re.fullmatch(r"[0-9a-f]{16}", out), out
    return out


def _mark(page: Page) -> None:
    """A flag that a reload or navigation would lose."""
    page.evaluate("window.__noReload = true")


def _not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__noReload === true"), "the page was reloaded"


def test_sign_in_see_nodes_and_a_deployed_swarm_appear_live(browser: Browser, site: Site) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, site.coord.url, site.coord.user_token)
    for n in NODES:
        row = page.locator(f'tr.node-row[data-node="{n}"]')
        expect(row).to_contain_text("online")
        expect(row).to_contain_text("ago")  # its last heartbeat
    expect(page.locator("#live-state")).to_contain_text("live")  # its event stream is open
    _mark(page)
    site.swarm_id = _deploy(site.coord, f"{SWARM}:Watched")
    # It shows up in the open overview, pushed by a server-sent event.
    expect(page.locator(f'tr.swarm-row[data-swarm="{site.swarm_id}"]')).to_be_visible(
        timeout=WAIT_MS
    )
    _not_reloaded(page)
    page.close()


def test_the_swarm_progresses_live_with_its_chart_failure_and_logs(
    browser: Browser, site: Site
) -> None:
    assert site.swarm_id, "runs after the deployment test"
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, site.coord.url, site.coord.user_token)
    page.goto(f"{site.coord.url}/ui/swarms/{site.swarm_id}")
    first = int(page.locator("#swarm-iteration").inner_text())
    rows = page.locator(
        'figure.chart:has(figcaption:text("accuracy · worker")) details.values tbody tr'
    )
    before = rows.count()
    _mark(page)
    # Iterations advance and the accuracy chart grows, without a reload.
    poll_for(
        lambda: int(page.locator("#swarm-iteration").inner_text()) >= first + 2,
        WAIT_MS / 1000,
        "the page to show two more iterations",
    )
    expect(rows).not_to_have_count(before, timeout=WAIT_MS)
    assert rows.count() > before
    expect(page.locator("figure.chart.drawn canvas").first).to_be_visible()
    _not_reloaded(page)
    assert int(page.evaluate("document.body.dataset.updates || 0")) > 0
    # The failure of iteration 1 on site-b, and its traceback.
    failure = page.locator("details.failure", has_text="site-b")
    expect(failure).to_be_visible(timeout=WAIT_MS)
    traceback = failure.locator("pre.traceback")
    expect(traceback).to_be_hidden()
    failure.locator("summary").click()
    expect(traceback).to_be_visible()
    expect(traceback).to_contain_text("RuntimeError: the disk of this node is full")
    # Per task, its instances with node, state, attempt and duration.
    table = page.locator('table.instances[data-task="worker"]')
    expect(table).to_contain_text("site-a")
    expect(table.locator("thead")).to_contain_text("Duration")
    # Filter the logs: one node, and a text.
    page.select_option("select[name=node]", "site-a")
    page.fill("input[name=text]", "starts iteration 0")
    page.click("form.filters button[type=submit]")
    logs = page.locator("table.logs tbody tr")
    expect(logs).to_have_count(1)
    expect(logs).to_contain_text("worker on site-a starts iteration 0")
    page.select_option("select[name=level]", "warning")
    page.fill("input[name=text]", "")
    page.select_option("select[name=node]", "")
    page.click("form.filters button[type=submit]")
    expect(logs.first).to_contain_text("aggregated")
    for level in logs.locator("td:nth-child(5)").all_inner_texts():
        assert level == "warning"
    with site.coord.user() as user:
        assert wait_status(user, site.swarm_id, 60)["status"] == "succeeded"
    page.close()


def test_stop_a_swarm_from_the_page_by_keyboard(browser: Browser, site: Site) -> None:
    swarm_id = _deploy(site.coord, f"{SWARM}:Endless")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, site.coord.url, site.coord.user_token)
    page.goto(f"{site.coord.url}/ui/swarms/{swarm_id}")
    expect(page.locator("#swarm-status")).to_have_text("running")
    # Tab from the top of the page to the stop button, as a keyboard user does.
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "stop-swarm":
            break
    else:
        pytest.fail("Tab never reached the stop button")
    page.keyboard.press("Enter")
    expect(page.locator("#swarm-status")).to_have_text("stopped", timeout=WAIT_MS)
    expect(page.locator("#stop-swarm")).to_have_count(0)
    with site.coord.user() as user:
        assert user.get(f"/v1/swarms/{swarm_id}").json()["status"] == "stopped"
    page.close()


def test_every_page_reads_without_javascript_and_at_phone_width(
    browser: Browser, site: Site
) -> None:
    assert site.swarm_id, "runs after the deployment test"
    for viewport in ({"width": 1280, "height": 800}, {"width": 390, "height": 844}):
        ctx = browser.new_context(java_script_enabled=False, viewport=viewport)
        page = ctx.new_page()
        sign_in(page, site.coord.url, site.coord.user_token)
        expect(page.locator("tr.node-row")).to_have_count(2)
        page.goto(f"{site.coord.url}/ui/swarms/{site.swarm_id}")
        expect(page.locator("svg.graph")).to_be_visible()
        expect(page.locator("svg.graph")).to_contain_text("aggregator")
        expect(page.locator("ol.timeline li")).to_have_count(6)
        failure = page.locator("details.failure", has_text="site-b")
        failure.locator("summary").click()  # <details> opens without script
        expect(failure.locator("pre.traceback")).to_contain_text("RuntimeError")
        chart = page.locator('figure.chart:has(figcaption:text("accuracy · worker"))')
        chart.locator("summary").click()
        expect(chart.locator("details.values tbody tr")).to_have_count(6)  # the values, as a table
        page.select_option("select[name=node]", "site-b")
        page.click("form.filters button[type=submit]")
        expect(page.locator("table.logs tbody tr").first).to_contain_text("site-b")
        page.goto(f"{site.coord.url}/ui/nodes/site-a")
        expect(page.locator("dl.facts")).to_contain_text("datasets")
        page.goto(f"{site.coord.url}/ui/compare?swarm={site.swarm_id}&metric=accuracy")
        expect(page.locator("figure.chart figcaption")).to_contain_text("accuracy")
        for path in ("/ui/", f"/ui/swarms/{site.swarm_id}", "/ui/nodes/site-a"):
            page.goto(site.coord.url + path)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{path} scrolls sideways at {viewport}"
        ctx.close()


def test_the_node_page_shows_its_facts_and_heartbeat_history(browser: Browser, site: Site) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, site.coord.url, site.coord.user_token)
    page.goto(f"{site.coord.url}/ui/nodes/site-a")
    # The facts the agent advertised for placement: CPUs, memory and GPUs.
    facts = page.locator("section[aria-labelledby=h-facts] dl.facts")
    for label, value in (
        ("cpus", r"^\d+(\.\d+)?$"),
        ("memory", r"^\d+\.\d GiB$"),
        ("gpus", r"^\d+$"),
    ):
        expect(facts.locator(f"dt:text-is('{label}') + dd")).to_have_text(re.compile(value))
    section = page.locator("section[aria-labelledby=h-beats]")
    expect(section.locator("h2")).to_have_text("Heartbeat history")
    rows = section.locator("table.beats tbody tr")
    # The agent beats every few seconds: reload until the table lists several.
    deadline_ms = WAIT_MS
    while rows.count() < 3 and deadline_ms > 0:
        page.wait_for_timeout(1000)
        deadline_ms -= 1000
        page.reload()
    assert rows.count() >= 3, "fewer than 3 heartbeats listed within a minute"
    expect(rows.first).to_contain_text("ago")
    # Each row after the newest's predecessor says the gap, a number of (milli)seconds.
    expect(rows.nth(0).locator("td").nth(1)).to_have_text(re.compile(r"^\d+(\.\d+)? m?s$"))
    # The chart of gaps, drawn by uPlot (shipped in the package), x counted in heartbeats.
    chart = section.locator("figure.chart")
    expect(chart.locator("figcaption")).to_have_text("seconds since the previous heartbeat")
    expect(chart.locator(".plot canvas")).to_be_visible()
    chart.locator("summary").click()
    expect(chart.locator("details.values thead")).to_contain_text("Heartbeat")
    expect(chart.locator("details.values tbody tr")).not_to_have_count(0)
    page.close()
