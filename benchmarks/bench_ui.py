"""The dashboard's weight and speed, and what an open page costs inference.

A registry is built from model_repo/ (digits fp32 and its int8 variant, benchmarked and
promoted), and ``servekit serve --model digits@production`` serves it. Headless Chromium
(Debian's chromium + chromium-driver, Selenium) then measures, for each page with the browser
cache disabled: the bytes transferred until the page has rendered (navigation + resources, from
the Resource Timing API) and the time to first render (navigation start to the page's content
in place). Then ``wrk`` (c=64, one-row binary requests) measures inference throughput in three
modes, alternated over ``--rounds`` rounds: no page open; the Live page open (it refreshes every
second) in the browser; and only its JSON polled every second (the server's side of the cost,
without the browser's CPU). Goal: throughput with the page open within 5% of without. For each
run it also reads the CPU seconds the server and the browser (Chromium and chromedriver) used
(``/proc``): the server's CPU per request says what the UI's routes add to inference with far
less noise than requests/s on a shared machine, and the browser's share of a core says what
drawing the page takes from a server that shares the browser's machine (as here).

    python benchmarks/bench_ui.py [--quick] [--duration S] [--rounds N]

Prints tables and writes benchmarks/results/ui.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import cpu_s_of
from _results import write_results
from bench_serving import free_port, request_bodies, stop, wait_ready, wrk

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "ui.json"
PAGES = ("models", "compare", "live", "drift")
CONCURRENCY = 64
MODES = ("none", "page", "poll")


def build_registry(root: Path) -> None:
    """digits:1 (fp32) and digits:2 (int8, its child) from model_repo/, benchmarked on the
    digits data and promoted through a gate."""
    from sklearn.datasets import load_digits

    from servekit.bench.promote import promote
    from servekit.bench.run import benchmark
    from servekit.registry import Registry

    reg = Registry(root)
    reg.register("digits", ROOT / "model_repo" / "digits" / "1", format="onnx", variant="fp32")
    reg.register(
        "digits",
        ROOT / "model_repo" / "digits_int8" / "1",
        format="onnx",
        variant="int8-dynamic",
        parent="digits:1",
    )
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    labels = y[:400].astype(np.int64)
    benchmark(reg, "digits", x[:400], labels=labels, batch_sizes=[1, 16], rounds=2,
              seconds_per_batch_size=0.3, progress=False, say=lambda _m: None)  # fmt: skip
    promote(reg, "digits:1", "production", ["accuracy >= 0.9"], reason="initial release")


def chrome():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    # The DevTools network log: bytes on the wire per request (encodedDataLength).
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(
        options=options, service=webdriver.ChromeService("/usr/bin/chromedriver")
    )


RENDERED = "return document.querySelector('#page[data-page=\"%s\"][data-loaded]') !== null"
TIMING = """
const paint = performance.getEntriesByName('first-contentful-paint')[0];
return {first_render_ms: Number(document.getElementById('page').dataset.loaded)
                         - performance.timeOrigin,
        first_paint_ms: paint ? paint.startTime : null};
"""


def measure_page(driver, base: str, page: str) -> dict:
    """Bytes on the wire (headers and bodies, every request until the page has rendered) and
    first render of one fresh load of ``page``, the browser cache disabled."""
    import json

    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    driver.get_log("performance")  # drop what came before
    driver.get(f"{base}/ui/#/{page}")
    WebDriverWait(driver, 30, poll_frequency=0.02).until(
        lambda d: d.execute_script(RENDERED % page)
    )
    timing = driver.execute_script(TIMING)
    events = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
    done = [e["params"] for e in events if e["method"] == "Network.loadingFinished"]
    return {"bytes": sum(d["encodedDataLength"] for d in done), "requests": len(done), **timing}


def poll(base: str, stop_event: threading.Event) -> None:
    """What the Live page asks for, once a second, without a browser."""
    while not stop_event.wait(1.0):
        with urllib.request.urlopen(f"{base}/v2/ui/live", timeout=10) as resp:
            resp.read()


def is_browser(argv: list[bytes]) -> bool:
    # Chromium's child processes rewrite their command line into one space-separated string.
    program = argv[0].split(b" ")[0].decode(errors="replace")
    return Path(program).name in ("chromium", "chromedriver")


def is_server(argv: list[bytes]) -> bool:
    return argv[1:4] == [b"-m", b"servekit", b"serve"]


def route_ms(base: str, route: str, calls: int = 30) -> float:
    """Median milliseconds of one GET of a dashboard JSON route (sequential, idle server):
    a page refreshing every second costs the server this share of one core per second."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        with urllib.request.urlopen(f"{base}{route}", timeout=10) as resp:
            resp.read()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per point, 3 rounds")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    duration = args.duration or (3.0 if args.quick else 10.0)
    rounds = args.rounds or 3
    for tool in ("wrk", "chromedriver"):
        if shutil.which(tool) is None:
            sys.exit(f"bench_ui: needs {tool} (Debian: apt-get install wrk chromium-driver)")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        build_registry(tmp / "registry")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "servekit", "serve", "--registry", str(tmp / "registry"),
             "--model", "digits@production", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        driver = None
        try:
            wait_ready(port, server)
            driver = chrome()
            driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
            loads = {p: [measure_page(driver, base, p) for _ in range(3)] for p in PAGES}
            routes = {r: route_ms(base, r) for r in ("/v2/ui/live", "/v2/ui/drift")}
            driver.get("about:blank")
            x = np.random.default_rng(1).random((1, 64), dtype=np.float32)
            body, headers = request_bodies(x, tmp, "digits")["binary"]
            wrk(port, "digits", body, headers, CONCURRENCY, 1, tmp)  # warm-up
            runs = []
            for round_ in range(rounds):
                order = MODES if round_ % 2 == 0 else MODES[::-1]
                for mode in order:
                    stop_event = threading.Event()
                    poller = None
                    if mode == "page":
                        driver.get(f"{base}/ui/#/live")
                    elif mode == "poll":
                        poller = threading.Thread(target=poll, args=(base, stop_event))
                        poller.start()
                    time.sleep(1.0)  # the page (or poller) is in its refresh cycle
                    before = (cpu_s_of(is_browser), cpu_s_of(is_server), time.monotonic())
                    r = wrk(port, "digits", body, headers, CONCURRENCY, duration, tmp)
                    wall = time.monotonic() - before[2]
                    r["browser_cpu"] = (cpu_s_of(is_browser) - before[0]) / wall
                    r["server_cpu"] = (cpu_s_of(is_server) - before[1]) / wall
                    stop_event.set()
                    if poller is not None:
                        poller.join(timeout=15)
                    driver.get("about:blank")
                    runs.append({"mode": mode, "round": round_, **r})
                    print(f"round {round_} {mode:5}: {r['rps']:8.0f} req/s  p50 "
                          f"{r['p50_us'] / 1e3:6.2f} ms  errors {r['errors'] + r['non2xx']}  "
                          f"cpu s/s: server {r['server_cpu']:.2f} browser "
                          f"{r['browser_cpu']:.2f}", flush=True)  # fmt: skip
        finally:
            if driver is not None:
                driver.quit()
            stop(server)
    pages = {}
    print("\n| page | bytes transferred | requests | first render ms (median, min-max) |")
    print("|---|---:|---:|---:|")
    for p, samples in loads.items():
        renders = [s["first_render_ms"] for s in samples]
        pages[p] = {
            "bytes": statistics.median(s["bytes"] for s in samples),
            "requests": samples[0]["requests"],
            "first_render_ms_median": statistics.median(renders),
            "first_render_ms_range": [min(renders), max(renders)],
            "first_paint_ms_median": statistics.median(s["first_paint_ms"] or 0 for s in samples),
            "samples": samples,
        }
        row = pages[p]
        print(f"| {p} | {row['bytes']:,.0f} | {row['requests']} | "
              f"{row['first_render_ms_median']:.0f} ({min(renders):.0f}-"
              f"{max(renders):.0f}) |")  # fmt: skip
    print()
    for r, ms in routes.items():
        print(f"GET {r}: {ms:.2f} ms median (idle server, sequential)")
    median = {m: statistics.median(r["rps"] for r in runs if r["mode"] == m) for m in MODES}
    spread = {m: [f(r["rps"] for r in runs if r["mode"] == m) for f in (min, max)] for m in MODES}
    for r in runs:  # the server's CPU per request: what the UI's routes add to inference
        r["server_cpu_us_per_request"] = r["server_cpu"] / r["rps"] * 1e6
    keys = ("server_cpu", "browser_cpu", "server_cpu_us_per_request")
    cpu = {m: {k: statistics.median(r[k] for r in runs if r["mode"] == m) for k in keys}
           for m in MODES}  # fmt: skip
    print("\n| mode | median req/s (min-max) | vs none | server CPU s/s | browser CPU s/s "
          "| server CPU us/request |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for m in MODES:
        c = cpu[m]
        print(f"| {m} | {median[m]:.0f} ({spread[m][0]:.0f}-{spread[m][1]:.0f}) | "
              f"{median[m] / median['none']:.1%} | {c['server_cpu']:.2f} | "
              f"{c['browser_cpu']:.2f} | {c['server_cpu_us_per_request']:.0f} |")  # fmt: skip
    # Each round runs every mode back to back: per-round ratios cancel slow drifts in load.
    paired = [
        next(r["rps"] for r in runs if r["round"] == i and r["mode"] == "page")
        / next(r["rps"] for r in runs if r["round"] == i and r["mode"] == "none")
        for i in range(rounds)
    ]
    print(
        f"\nLive page open / none: {median['page'] / median['none']:.1%} of medians (goal >= 95%)"
    )
    print(f"per-round page / none: {', '.join(f'{p:.1%}' for p in paired)}")
    per_request = {m: cpu[m]["server_cpu_us_per_request"] for m in MODES}
    print(
        "server CPU per request, page / none: "
        f"{per_request['page'] / per_request['none']:.1%}; poll / none: "
        f"{per_request['poll'] / per_request['none']:.1%} (the share of a core the open page "
        f"costs the browser: {cpu['page']['browser_cpu'] - cpu['none']['browser_cpu']:.2f})"
    )
    write_results(
        RESULTS,
        {
            "duration_s": duration,
            "rounds": rounds,
            "pages": pages,
            "route_ms": routes,
            "runs": runs,
            "median_rps": median,
            "median_cpu_s_per_s": cpu,
            "ratio_page_none": median["page"] / median["none"],
            "ratio_poll_none": median["poll"] / median["none"],
            "paired_ratios_page_none": paired,
        },
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
