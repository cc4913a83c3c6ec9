"""The dashboard in a real browser: Playwright driving Debian's chromium against `twinledger serve`.

chromium comes from the system (`apt-get install chromium`, /usr/bin/chromium; .ci/run installs
it), never from `playwright install`. Without it these tests are skipped loudly, except under CI
(CI=true), where they fail.

Set TWINLEDGER_SCREENSHOTS=docs/dashboard to refresh the screenshots docs/dashboard.md shows;
otherwise they go to a temporary folder (taking them is still tested).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infrastructure.bench.http_load import server
from infrastructure.service import Ledger
from tests.conftest import fresh_postgres_url

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
BIG_BUDGET_CENTS = 2**62 - 1  # above 2^53: a float would lose the last cents
HOSTILE_NAME = 'Mars <img src=x onerror="window.__owned=1"> & "friends"'

try:
    from playwright import sync_api as playwright_api
except ImportError:  # reported by the browser fixture: skipped, or failed under CI
    playwright_api = None


def _no_browser(reason: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI: {reason} (.ci/run installs chromium with apt-get)")
    pytest.skip(f"BROWSER TESTS SKIPPED: {reason}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if playwright_api is None:
        _no_browser("playwright is not installed: pip install -e '.[test]'")
    if not CHROMIUM.exists():
        _no_browser(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("TWINLEDGER_SCREENSHOTS")
    folder = (ROOT / chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Served:
    base: str
    url: str
    twin_id: str
    run_a: str
    run_b: str
    big_run: str
    experiment_id: str
    more_runs: str  # four more 1000-year runs, comma-separated


def _populate(url: str) -> dict[str, str]:
    """A twin with a hostile name, six 1000-year runs (two differing only by seed), a run with a
    budget above 2^53 cents, and an experiment."""
    with Ledger.open(url) as ledger:
        twin = ledger.clone_twin(name=HOSTILE_NAME, body="mars", created_by="test")
        ids: dict[str, str] = {"twin_id": twin.id}
        for key, seed in (("run_a", 1), ("run_b", 2)):
            run = ledger.queue_run(
                twin.id, pattern="mars_terraform", years=1000, budget_cents=10**12, seed=seed
            )
            ledger.execute_run(run.id)
            ids[key] = run.id
        ids["more_runs"] = ",".join(
            ledger.execute_run(
                ledger.queue_run(
                    twin.id,
                    pattern="mars_terraform",
                    years=1000,
                    budget_cents=10**12,
                    seed=seed,
                    tech_level=seed - 5,
                ).id
            ).id
            for seed in range(11, 15)
        )
        big = ledger.queue_run(
            twin.id, pattern="mars_terraform", years=20, budget_cents=BIG_BUDGET_CENTS, seed=3
        )
        ledger.execute_run(big.id)
        ids["big_run"] = big.id
        spec = tomllib.loads((ROOT / "docs/examples/mars-search.toml").read_text())
        spec.pop("body", None)
        spec.update(twin=twin.id, years=20, samples=1, max_iterations=6, workers=1)
        ids["experiment_id"] = ledger.run_experiment(spec).experiment.id
    return ids


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server on a SQLite ledger populated by ``_populate``."""
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard')}/ledger.db"
    ids = _populate(url)
    with server(url) as base:
        yield Served(base=base, url=url, **ids)


def _open(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)


def _chart_points(page: Any) -> dict[str, int]:
    return page.eval_on_selector_all(
        ".chart[data-points]",
        "nodes => Object.fromEntries(nodes.map(n => [n.dataset.chart, Number(n.dataset.points)]))",
    )


def test_run_page_draws_every_year(page: Any, served: Served, shots: Path) -> None:
    _open(page, f"{served.base}/runs/{served.run_a}")
    points = _chart_points(page)
    assert set(points) == {"temperature", "pressure", "composition", "habitability", "money"}
    assert set(points.values()) == {1000}, points
    assert page.evaluate("Object.values(TL.charts).map(c => c.points)") == [1000] * 5
    assert page.get_attribute("#progress", "data-progress") == "100"
    # key events are listed and marked on the time axis (the list is what the marks draw)
    assert page.locator("#key-events tbody tr").count() >= 1
    page.screenshot(path=str(shots / "run.png"), full_page=True)
    # time travel: the state at the end of a year, folded from the run's events
    page.fill("#travel-year", "500")
    page.click("#travel-state-show")
    page.wait_for_selector("#travel-state dl")
    assert page.inner_text("#travel-state dl dd") == "500"


def test_run_page_replay_shows_identical(page: Any, served: Served) -> None:
    _open(page, f"{served.base}/runs/{served.run_b}")
    page.click("#replay")
    page.wait_for_selector("#replay-verdict[data-identical]", timeout=60_000)
    assert page.get_attribute("#replay-verdict", "data-identical") == "true"
    assert "Identical" in page.inner_text("#replay-verdict")


def test_money_keeps_every_cent_above_2_53(page: Any, served: Served) -> None:
    _open(page, f"{served.base}/runs/{served.big_run}")
    # 4611686018427387903 cents; as a float it would print ...387904
    assert "GCC 46,116,860,184,273,879.03" in page.inner_text("#run-fields")


def test_text_from_the_api_is_never_markup(page: Any, served: Served, shots: Path) -> None:
    _open(page, f"{served.base}/twins/{served.twin_id}")
    assert page.inner_text("h1 .name") == HOSTILE_NAME
    assert page.locator("img").count() == 0
    assert page.evaluate("window.__owned") is None
    page.screenshot(path=str(shots / "twin.png"), full_page=True)


def test_compare_two_runs(page: Any, served: Served, shots: Path) -> None:
    _open(page, f"{served.base}/compare?runs={served.run_a},{served.run_b}")
    points = _chart_points(page)
    assert points and set(points.values()) == {1000}, points
    series = page.eval_on_selector_all(".chart", "nodes => nodes.map(n => n.dataset.series)")
    assert set(series) == {"2"}
    differing = page.locator("#parameter-diff tr.differs td:first-child").all_inner_texts()
    assert differing == ["seed"]
    assert re.search(r"First diverging year: \d+", page.inner_text("#divergence"))
    page.screenshot(path=str(shots / "compare.png"), full_page=True)


def test_compare_six_runs_of_a_thousand_years(page: Any, served: Served) -> None:
    runs = [served.run_a, served.run_b, *served.more_runs.split(",")]
    _open(page, f"{served.base}/compare?runs={','.join(runs)}")
    charts = page.evaluate("TL.charts")
    assert len(charts) == 6
    assert all(chart == {"points": 1000, "series": 6} for chart in charts.values()), charts
    assert set(page.locator("#parameter-diff tr.differs td:first-child").all_inner_texts()) == {
        "seed",
        "tech_level",
    }


def test_experiment_page(page: Any, served: Served, shots: Path) -> None:
    _open(page, f"{served.base}/experiments/{served.experiment_id}")
    assert page.get_attribute(".chart[data-chart=objective]", "data-points") == str(
        page.locator("table.candidates tbody tr").count()
    )
    assert int(page.get_attribute("#heatmap-grid", "data-tried") or 0) >= 2
    assert page.locator("#heatmap-grid td.accepted").count() >= 1
    page.screenshot(path=str(shots / "experiment.png"), full_page=True)


def _start_run_from_the_form(page: Any, base: str, years: int) -> None:
    _open(page, f"{base}/")
    page.fill("#run-years", str(years))
    page.fill("#run-seed", "7")
    page.fill("#run-budget", "12,345,678.91")
    page.click("#run-submit")
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}$"), timeout=30_000)
    page.wait_for_selector("#progress[data-progress='100']", timeout=120_000)
    page.wait_for_selector("body[data-live=ended]", timeout=60_000)
    assert set(_chart_points(page).values()) == {years}
    assert "GCC 12,345,678.91" in page.inner_text("#run-fields")


def test_start_a_run_from_the_form_and_follow_it(page: Any, served: Served, shots: Path) -> None:
    _open(page, f"{served.base}/")
    assert page.locator("#twins tbody tr").count() >= 1
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    _start_run_from_the_form(page, served.base, 600)


def test_the_form_shows_the_field_a_bad_run_names(page: Any, served: Served) -> None:
    import httpx

    before = httpx.get(f"{served.base}/api/v1/runs", params={"limit": 1000}).json()["items"]
    _open(page, f"{served.base}/")
    page.eval_on_selector("#run-years", "input => input.removeAttribute('max')")  # the server's say
    page.fill("#run-years", "1001")
    page.click("#run-submit")
    page.wait_for_selector(".form-status.error")
    assert page.inner_text(".form-status").startswith("years")
    page.fill("#run-years", "10")
    page.fill("#run-budget", "12.345")
    page.click("#run-submit")
    page.wait_for_function(
        "document.querySelector('.form-status').textContent.startsWith('budget')"
    )
    assert page.url == f"{served.base}/"
    after = httpx.get(f"{served.base}/api/v1/runs", params={"limit": 1000}).json()["items"]
    assert len(after) == len(before)


def test_the_form_sends_the_token_a_server_asks_for(
    page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    with Ledger.open(url) as ledger:
        ledger.clone_twin(name="guarded", body="mars", created_by="test")
    monkeypatch.setenv("TWINLEDGER_API_TOKEN", "s3cret-token")
    with server(url) as base:
        _open(page, f"{base}/")
        page.fill("#run-years", "5")
        page.click("#run-submit")
        page.wait_for_selector(".form-status.error")
        assert "Authorization" in page.inner_text(".form-status")
        page.fill("#run-token", "s3cret-token")
        page.click("#run-submit")
        page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}$"), timeout=30_000)
        page.wait_for_selector("#progress[data-progress='100']", timeout=120_000)


def test_a_read_only_server_shows_no_run_form(page: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    with Ledger.open(url) as ledger:
        twin = ledger.clone_twin(name="watched", body="mars", created_by="test")
    with server(url, "--read-only") as base:
        for address in ("/", f"/twins/{twin.id}"):
            _open(page, f"{base}{address}")
            assert "read-only" in page.inner_text("#read-only")
            assert page.locator("#run-form").count() == 0


@pytest.mark.postgres
def test_start_a_run_from_the_form_on_postgres(page: Any) -> None:
    """The same on PostgreSQL, where progress comes from LISTEN/NOTIFY."""
    with fresh_postgres_url() as url:
        with Ledger.open(url) as ledger:
            ledger.clone_twin(name="pg twin", body="mars", created_by="test")
        with server(url) as base:
            _start_run_from_the_form(page, base, 300)


def test_the_api_docs_page_renders_offline(page: Any, served: Served, shots: Path) -> None:
    """Swagger UI draws every operation with every request to another host refused, and the
    page's Content-Security-Policy blocks nothing it needs."""
    local = served.base + "/"
    elsewhere: list[str] = []
    console: list[str] = []

    def only_here(route: Any) -> None:
        if route.request.url.startswith(local):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_here)
    page.on("console", lambda message: console.append(message.text))
    page.goto(f"{served.base}/api/v1/docs")
    schema = page.request.get(f"{served.base}/api/v1/openapi.json").json()
    operations = sum(len(methods) for methods in schema["paths"].values())
    page.wait_for_function(
        f"document.querySelectorAll('.opblock').length >= {operations}", timeout=30_000
    )
    assert page.locator(".opblock-summary-path", has_text="/api/v1/runs/{run_id}/results").count()
    page.screenshot(path=str(shots / "api-docs.png"))
    assert elsewhere == []
    assert not [text for text in console if "Content Security Policy" in text], console


def test_pages_name_a_bad_id(page: Any, served: Served) -> None:
    _open(page, f"{served.base}/runs/not-a-run")
    assert "run_id" in page.inner_text("p.error")


def test_a_missing_browser_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI"):
        _no_browser("chromium is missing")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="SKIPPED"):
        _no_browser("chromium is missing")


def test_every_static_file_is_package_data() -> None:
    """A non-editable install ships the pages and the chart library (pyproject package-data,
    whose patterns setuptools expands as globs relative to the package)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["infrastructure.http"]
    package = ROOT / "infrastructure" / "http"
    files = {p.relative_to(package).as_posix() for p in package.glob("static/**/*") if p.is_file()}
    shipped = {
        p.relative_to(package).as_posix()
        for pattern in patterns
        for p in package.glob(pattern)
        if p.is_file()
    }
    assert {
        "static/run.html",
        "static/vendor/uPlot.iife.min.js",
        "static/vendor/uPlot.LICENSE",
    } <= files
    assert files <= shipped, f"not matched by package-data {patterns}: {sorted(files - shipped)}"
