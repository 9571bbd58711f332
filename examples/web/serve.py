"""The browser page for training bundles: build its site, then serve it (one command).

    python examples/web/serve.py            # then open http://127.0.0.1:8000/ (offline, no CDN)
    python examples/web/serve.py --port 8080 --site /tmp/site --no-serve

Needs `npm ci` in js/ once (onnxruntime-web). The site folder (default examples/web/site/,
git-ignored) is self-contained and static: index.html and app.mjs, vendor/ (onnxruntime-web's
WASM build and js/bundle.mjs, copied), samples/iris/ and samples/digits/ (training bundles from
`irkit export --bundle`, each with a shuffled data.csv). Any static file server serves it.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ORT_DIST = os.path.join(ROOT, "js", "node_modules", "onnxruntime-web", "dist")
VENDOR = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
PAGE = ("index.html", "app.mjs")
# sample name -> (recipe, dataset, --freeze). The digits CNN's first conv feeds a BatchNorm,
# which cancels its bias: that bias's gradient is zero but for rounding, and Adam turns rounding
# into lr-sized steps that differ between runtimes; it stays fixed (BatchNorm's beta plays its
# part), so every runtime trains the same weights.
SAMPLES = {"iris": ("iris_mlp", "iris", None), "digits": ("digits_cnn", "digits", "conv2d_2.b")}


def build_site(site: str, samples: bool = True) -> str:
    """Write the page's static site into `site` (created; its vendor/ and samples/ replaced).
    Returns `site`. Raises SystemExit with one line when onnxruntime-web is not installed."""
    if not os.path.exists(os.path.join(ORT_DIST, VENDOR[0])):
        raise SystemExit("serve.py: error: onnxruntime-web is not installed; run `npm ci` in "
                         f"{os.path.join(ROOT, 'js')}")
    os.makedirs(os.path.join(site, "vendor"), exist_ok=True)
    for name in PAGE:
        shutil.copy(os.path.join(HERE, name), os.path.join(site, name))
    for name in VENDOR:
        shutil.copy(os.path.join(ORT_DIST, name), os.path.join(site, "vendor", name))
    shutil.copy(os.path.join(ROOT, "js", "bundle.mjs"), os.path.join(site, "vendor"))
    if samples:
        for name, (recipe, dataset, freeze) in SAMPLES.items():
            sample_bundle(os.path.join(site, "samples", name), recipe, dataset, freeze)
    return site


def sample_bundle(folder: str, recipe: str, dataset: str, freeze: str | None) -> None:
    """A bundle of `recipe` (built to ONNX and exported with `--freeze` when given) and its
    dataset as data.csv, rows shuffled with seed 0, labels as class names."""
    sys.path.insert(0, ROOT)
    from click.testing import CliRunner

    from irkit.cli import main
    from irkit.data import load_dataset
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = recipe
        if freeze:
            source = os.path.join(tmp, "model.onnx")
            _invoke(CliRunner(), main, ["build", recipe, "-o", source])
        _invoke(CliRunner(), main, ["export", source, "--bundle", folder, "--data", dataset]
                + (["--freeze", freeze] if freeze else []))
    ds = load_dataset(dataset)
    order = np.random.default_rng(0).permutation(len(ds.y))
    x, y = ds.x[order].reshape(len(order), -1).astype(np.float32), ds.y[order]
    classes = list(ds.classes) if ds.classes else [str(i) for i in range(int(y.max()) + 1)]
    with open(os.path.join(folder, "data.csv"), "w") as f:
        f.write(",".join(f"f{i}" for i in range(x.shape[1])) + ",label\n")
        for row, t in zip(x, y):
            f.write(",".join(repr(float(v)) for v in row) + f",{classes[int(t)]}\n")


def _invoke(runner, main, args: list[str]) -> None:
    result = runner.invoke(main, args)
    if result.exit_code != 0:
        raise SystemExit(result.output.strip())


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with the types ES modules and WebAssembly need."""
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, *args) -> None:
        pass


def serve(site: str, port: int) -> None:
    """Serve `site` on 127.0.0.1:`port` until interrupted."""
    handler = functools.partial(Handler, directory=site)
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(f"serving {site} at http://127.0.0.1:{server.server_port}/ (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default=os.path.join(HERE, "site"))
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-serve", action="store_true", help="build the site only")
    args = parser.parse_args()
    build_site(args.site)
    if not args.no_serve:
        serve(args.site, args.port)


if __name__ == "__main__":
    main()
