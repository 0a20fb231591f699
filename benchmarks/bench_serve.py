"""Milliseconds per redraw of `gpunn serve`'s page in Chromium: preprocessing the drawing,
the forward pass and drawing every layer.

    python benchmarks/bench_serve.py                  # needs Chromium and Playwright
    python benchmarks/bench_serve.py --data-dir DIR   # where MNIST is (for the 3b1b network)

Two networks: 3Blue1Brown's 784-16-16-10 (the default of `gpunn serve`, trained once and
cached) and chapter 6's conv net (ch6-relu: conv 20 5x5 + pool, conv 40 5x5 + pool, FC 100,
softmax 10; its speed does not depend on its weights, so it is not trained here). For each,
the page written by `gpunn export-web` is opened from a file in headless Chromium, a 7 is
drawn with the mouse, and the page's own `gpunn.benchmark(n)` times ``n`` full redraws
(after warm-up ones) with `performance.now()`. Targets: 16 ms (one frame at 60 Hz) for the
3b1b network, 50 ms for the conv net.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import table, write_section  # noqa: E402

TARGETS = {"3b1b 784-16-16-10": 16.0, "ch6-relu conv net": 50.0}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SEVEN = [(80, 70), (200, 70), (170, 130), (140, 200), (125, 240)]


def networks(data_dir):
    from gpunn import book, web
    from gpunn.data import cache_dir, load_dataset

    fc, _ = web.default_model(cache_dir() / "serve" / "3b1b-784-16-16-10.npz",
                              lambda: load_dataset("mnist", data_dir))
    conv = book.build(book.get("ch6-relu"), seed=1, backend="cpu")
    return {"3b1b 784-16-16-10": fc, "ch6-relu conv net": conv}


def measure(browser, net, directory, n):
    from gpunn import web

    path = web.export_web(web.model_bundle(net), directory)
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    page.goto(path.as_uri())
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + SEVEN[0][0], box["y"] + SEVEN[0][1])
    page.mouse.down()
    for x, y in SEVEN[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=6)
    page.mouse.up()
    page.wait_for_function("gpunn.state().prediction !== null")
    result = page.evaluate(f"gpunn.benchmark({n}, 20)")
    page.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="where MNIST is")
    parser.add_argument("--redraws", type=int, default=200, help="timed redraws per network")
    parser.add_argument("--chromium", default=os.environ.get("GPUNN_CHROMIUM",
                                                             "/usr/bin/chromium"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    nets = networks(args.data_dir)
    rows = []
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as tmp:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        version = browser.version
        for name, net in nets.items():
            r = measure(browser, net, Path(tmp) / name.split()[0], args.redraws)
            target = TARGETS[name]
            rows.append([name, f"{r['preprocess']:.2f}", f"{r['forward']:.2f}",
                         f"{r['draw']:.2f}", f"{r['median']:.1f}", f"{r['p95']:.1f}",
                         f"{r['max']:.1f}", f"< {target:.0f}",
                         "met" if r["p95"] < target else "NOT met"])
            print(name, r)
        browser.close()
    body = (f"Headless Chromium {version} (`--disable-gpu`: software canvas), the page of "
            f"`gpunn export-web` opened from a file, a 7 drawn with the mouse; the page's "
            f"`gpunn.benchmark({args.redraws})` times that many full redraws after 20 warm-up "
            "ones (`performance.now()`, 0.1 ms resolution), each ending with a read of one "
            "pixel per canvas so that the drawing is finished, not only recorded. Phases are "
            "medians; the target applies to the 95th percentile of the total. 3b1b is the "
            "cached default network of `gpunn serve`; the conv net has its initial weights "
            "(the time does not depend on them). `python benchmarks/bench_serve.py`.\n\n"
            + table(["network", "preprocess ms", "forward ms", "draw ms", "total median ms",
                     "p95 ms", "max ms", "target ms", "p95 vs target"], rows))
    print(body)
    if not args.no_write:
        write_section("Browser: `gpunn serve` redraw in Chromium", body)


if __name__ == "__main__":
    main()
