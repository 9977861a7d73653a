"""The dashboard in a real browser (headless Chromium) against real servers: a registry with a
packaged, benchmarked and promoted model, served as digits@production."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from _browser import chrome, console_errors, open_page, texts, wait_for
from _dashboard import build_registry, digits
from _serving import start_server
from servekit.registry import Registry

pytestmark = pytest.mark.slow
By = pytest.importorskip("selenium.webdriver.common.by").By


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash") / "registry"
    refs = build_registry(root, root.parent)
    return Registry(root), refs


@pytest.fixture(scope="module")
def server(registry):
    reg, _ = registry
    proc = start_server(
        "--registry", str(reg.root), "--model", "digits@production", "--drift-window-rows", "400"
    )
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def driver():
    d = chrome()
    yield d
    d.quit()


def base(server) -> str:
    return f"http://{server.url}"


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def send(server, rows: np.ndarray, batch: int = 8) -> None:
    client = httpclient.InferenceServerClient(server.url)
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        inp = httpclient.InferInput("input", list(chunk.shape), "FP32")
        inp.set_data_from_numpy(chunk, binary_data=True)
        client.infer("digits", [inp])


def shoot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path


def test_models_page_shows_versions_aliases_history_and_lineage(server, registry, driver, tmp_path):
    reg, refs = registry
    open_page(driver, base(server), "models")
    assert console_errors(driver) == []
    versions = reg.list_versions("digits")
    assert len(versions) == 3
    for v in versions:
        row = driver.find_element(By.CSS_SELECTOR, f'tr[data-ref="{v.ref}"]')
        assert (v.variant or "-") in row.text
        assert row.find_element(By.CSS_SELECTOR, '[data-verified="true"]')
        node = driver.find_element(By.CSS_SELECTOR, f'g.node[data-ref="{v.ref}"]')
        assert v.ref in node.text
        if v.parent is not None:
            driver.find_element(By.CSS_SELECTOR, f'line[data-edge="{v.parent}->{v.ref}"]')
    promoted = reg.get("digits@production")
    assert promoted.ref == refs["promoted"]
    alias = driver.find_element(By.CSS_SELECTOR, '[data-alias="production"]')
    assert alias.text == f"@production → {promoted.version}"
    history = driver.find_elements(By.CSS_SELECTOR, "tr[data-history]")
    assert len(history) == len(reg.history("digits")) == 2
    assert "initial release" in history[0].text
    shoot(driver, tmp_path, "models")


def test_compare_page_shows_every_variant_with_the_registry_figures(
    server, registry, driver, tmp_path
):
    reg, refs = registry
    open_page(driver, base(server), "compare")
    assert console_errors(driver) == []
    checked = 0
    for v in reg.list_versions("digits"):
        row = driver.find_element(By.CSS_SELECTOR, f'tr[data-ref="{v.ref}"]')
        cells = row.find_elements(By.CSS_SELECTOR, "[data-metric]")
        names = {c.get_attribute("data-metric") for c in cells}
        assert {
            "size_bytes",
            "load_time_ms",
            "accuracy",
            "latency_p50_ms_b1",
            "latency_p99_ms_b16",
            "throughput_rows_s_b16",
        } <= names
        for c in cells:
            name, value = c.get_attribute("data-metric"), c.get_attribute("data-value")
            if name in v.metrics:
                assert float(value) == v.metrics[name], (v.ref, name)
                checked += 1
            else:
                assert value == "" and name == "agreement_with_parent" and v.parent is None
    assert checked >= 3 * 9
    dots = driver.find_elements(By.CSS_SELECTOR, "circle[data-ref]")
    assert sorted(d.get_attribute("data-ref") for d in dots) == sorted(
        v.ref for v in reg.list_versions("digits")
    )
    gates = driver.find_element(By.ID, "promotion").text
    assert f"1 → {reg.get(refs['promoted']).version}" in gates
    assert "accuracy >= production.accuracy - 0.05" in gates and "pass" in gates
    shoot(driver, tmp_path, "compare")


def test_live_figures_move_after_traffic(server, driver, tmp_path):
    open_page(driver, base(server), "live")
    assert console_errors(driver) == []

    def requests(d) -> int:
        return int(texts(d, '[data-field="requests"]')[0].replace(",", ""))

    before = requests(driver)
    figure = driver.find_element(By.CSS_SELECTOR, '[data-field="requests"]')
    x, _ = digits()
    send(server, x[:160])
    # The page refreshes itself: wait for it to show the new requests.
    wait_for(driver, lambda d: requests(d) >= before + 20)
    # ... in place: the element found before the refreshes is still the one on the page.
    assert int(figure.text.replace(",", "")) >= before + 20
    send(server, x[160:320])
    wait_for(driver, lambda d: requests(d) >= before + 40)
    assert texts(driver, '[data-field="p50_ms"]') != ["-"]
    assert texts(driver, '[data-field="request_rate"]') != ["-"]

    def points(d) -> int:
        found = texts(d, 'polyline[data-series="requests/s"]', "points")
        return len(found[0].split()) if found else 0

    wait_for(driver, lambda d: points(d) >= 2)  # the rate over time: one point per sample
    assert console_errors(driver) == []
    shoot(driver, tmp_path, "live")


def test_drift_page_names_the_features_the_drift_route_names(server, driver, tmp_path):
    x, _ = digits()
    rng = np.random.default_rng(3)
    shifted = np.clip(x[rng.integers(0, len(x), 400)] + 0.35, 0, None).astype(np.float32)
    send(server, shifted)
    status, route = get_json(f"{base(server)}/v2/models/digits/drift")
    assert status == 200 and route["dataset_drift"] and route["drifted_features"]
    open_page(driver, base(server), "drift")
    assert console_errors(driver) == []
    shown = texts(driver, "[data-drifted-feature]", "data-drifted-feature")
    assert shown == route["drifted_features"]
    assert texts(driver, '[data-field="dataset_drift"]') == ["DATASET DRIFT"]
    first = route["drifted_features"][0]
    assert "drifted" in texts(driver, f'tr[data-feature="{first}"]', "class")[0]
    assert texts(driver, 'rect[data-group="window"]', "height")
    shoot(driver, tmp_path, "drift")


def test_restricted_server_shows_the_lock_and_opens_with_the_header(registry, driver, tmp_path):
    reg, _ = registry
    proc = start_server(
        "--registry", str(reg.root), "--model", "digits@production",
        "--http-restricted-api", "metadata,model-config,statistics:ui-key=s3cret",
    )  # fmt: skip
    try:
        url = f"http://{proc.url}"
        # No bypass: the JSON routes answer Triton's 403 without the header.
        for route in ("models", "compare", "compare/digits", "live", "drift"):
            status, body = get_json(f"{url}/v2/ui/{route}")
            assert (status, body) == (
                403,
                {"error": "This API is restricted, expecting header 'ui-key'"},
            ), route
        status, info = get_json(f"{url}/v2/ui/info")
        assert status == 200 and "s3cret" not in json.dumps(info)
        assert info["restricted"]["live"] == [{"group": "statistics", "header": "ui-key"}]
        assert get_json(f"{url}/v2/ui/live", {"ui-key": "s3cret"})[0] == 200

        open_page(driver, url, "models")
        lock = driver.find_element(By.ID, "lock")
        assert "metadata" in lock.get_attribute("data-groups") and "ui-key" in lock.text
        assert driver.find_elements(By.CSS_SELECTOR, "tr[data-ref]") == []
        shoot(driver, tmp_path, "locked")
        field = driver.find_element(By.ID, "unlock-value")
        field.send_keys("wrong")
        driver.find_element(By.CSS_SELECTOR, "#unlock button").click()
        wait_for(driver, lambda d: "refused" in d.find_element(By.ID, "lock").text)
        field = driver.find_element(By.ID, "unlock-value")
        field.send_keys("s3cret")
        driver.find_element(By.CSS_SELECTOR, "#unlock button").click()
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-ref="digits:1"]'))
        open_page(driver, url, "live")
        assert texts(driver, '[data-field="requests"]')
        # The browser's 403s are console errors by design; nothing else is.
        errors = console_errors(driver)
        assert errors and all("403" in e["message"] for e in errors)
    finally:
        driver.execute_script("sessionStorage.clear()")
        driver.get("about:blank")  # stop the page's refreshes before its server goes
        console_errors(driver)
        assert proc.stop() == 0


def test_standalone_ui_browses_a_registry_without_serving(registry, driver, tmp_path):
    reg, _ = registry
    proc = subprocess.Popen(
        [sys.executable, "-m", "servekit", "ui", "--registry", str(reg.root), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once listening
        assert line.startswith("servekit: dashboard on http://"), line
        url = line.split()[-1].removesuffix("/ui/")
        status, body = get_json(f"{url}/v2/ui/models")
        assert status == 200 and body["served"] is None
        assert [m["name"] for m in body["registry"]] == ["digits"]
        status, body = get_json(f"{url}/v2/ui/live")
        assert status == 404 and "servekit serve" in body["error"]
        open_page(driver, url, "models")
        assert console_errors(driver) == []
        assert driver.find_elements(By.CSS_SELECTOR, 'tr[data-ref="digits:1"]')
        live = driver.find_element(By.CSS_SELECTOR, 'nav a[data-page="live"]')
        assert "disabled" in live.get_attribute("class")
        open_page(driver, url, "compare")
        assert console_errors(driver) == []
        assert len(driver.find_elements(By.CSS_SELECTOR, "circle[data-ref]")) == 3
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
