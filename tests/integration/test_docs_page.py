"""Party A's API docs page in a real headless browser with no internet: Debian's chromium opens `/docs` of the
real service (`python -m party_a serve`, over a model store trained briefly here) and every request that
leaves the loopback is aborted and recorded. Swagger UI must render every endpoint, nothing may have been
aborted (no CDN, no favicon from elsewhere), and the browser sends no token: the page, `/openapi.json` and the
page's assets are open, the data stays behind the token. A full-page screenshot lands in
`$VFREC_TEST_ARTEFACTS/docs-page.png` (default `test-artefacts/`).

`make test` installs Debian's chromium where it is missing; Playwright (the test extra) drives it, with no
browser of its own (`playwright install` is never run).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from protocol.keys.keyfiles import write_private
from scenarios import ecommerce_bank
from scenarios.launch import ROOT, LocalRun, free_ports, run_all, start
from tests.support.service_client import TOKEN, wait_healthy

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ENDPOINTS = {"/v1/users/{user_id}/recommendations", "/v1/recommendations", "/healthz", "/metrics"}
ARTEFACTS = Path(os.environ.get("VFREC_TEST_ARTEFACTS", ROOT / "test-artefacts"))


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, or a failure saying how to get it (never a silent skip)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `make test`, which installs Debian's chromium "
                    f"(apt-get install chromium) before the suite")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed: run `make test` (or pip install -e '.[test]')")
    return CHROMIUM


@pytest.fixture(scope="module")
def service(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A's service, with a bearer token, over a model store from a brief run (120 users, one epoch)."""
    root = tmp_path_factory.mktemp("docs_page")
    run: LocalRun = ecommerce_bank.prepare(root, users=120, epochs=1, seed=0, progress=False, batch_users=16)
    out = run_all(run, timeout=300)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-3000:] for r, o in out.items()}
    port = free_ports(1)[0]
    write_private(run.dir("party_a") / "serve.token", TOKEN.encode())
    with open(run.configs["party_a"], "a") as f:
        f.write(f'\n[serve]\nlisten = "127.0.0.1:{port}"\ntoken_file = "serve.token"\n')
    proc = start(run, "party_a", "serve")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield base
    finally:
        proc.kill()
        proc.wait()


def status_without_token(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_docs_page_renders_every_endpoint_with_nothing_from_the_internet(chromium: str, service: str,
                                                                              tmp_path: Path) -> None:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import Route, sync_playwright

    blocked: list[str] = []
    page_errors: list[str] = []

    def loopback_only(route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.hostname in LOOPBACK:
            route.continue_()
        else:
            blocked.append(url)
            route.abort("internetdisconnected")

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTEFACTS / "docs-page.png"
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=chromium,
                                                       headless=True, args=CHROMIUM_ARGS,
                                                       viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            page.route("**/*", loopback_only)
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            response = page.goto(f"{service}/docs", wait_until="load")
            assert response is not None and response.status == 200
            try:
                page.wait_for_selector(".opblock-summary-path", timeout=30_000)
                page.wait_for_load_state("networkidle")
            except PlaywrightError as exc:
                page.screenshot(path=str(screenshot), full_page=True)
                pytest.fail(f"Swagger UI did not render the endpoints ({exc.message.splitlines()[0]}); "
                            f"blocked requests: {blocked}; page errors: {page_errors}; see {screenshot}")
            page.screenshot(path=str(screenshot), full_page=True)
            paths = page.eval_on_selector_all(".opblock-summary-path",
                                              "els => els.map(e => e.getAttribute('data-path') || e.innerText)")
            title = page.inner_text(".info .title")
            authorize = page.locator("button.authorize").count()  # where a reader gives the token for "Try it out"
        finally:
            browser.close()

    assert blocked == [], f"the docs page asked for something off this host: {blocked}"
    assert page_errors == []
    assert ENDPOINTS <= {path.replace("\u200b", "").strip() for path in paths}, paths
    assert "vfrec party A: recommendations" in title and authorize == 1
    assert screenshot.stat().st_size > 10_000
    # the browser sent no token: the page is open, the data is not
    assert status_without_token(f"{service}/metrics") == 401
    assert status_without_token(f"{service}/v1/users/anyone/recommendations") == 401
