"""The HTML report and its PNG plots: decoded, measured, and rendered in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from PIL import Image

# Inline pytester runs drop the modules first imported inside them; matplotlib is imported here once.
import matplotlib.backends.backend_agg  # noqa: F401
import matplotlib.figure  # noqa: F401
from robsig_checks.report.html import render_html
from robsig_checks.report.plots import (DPI, FIGSIZE, concepts_per_category, cka_per_layer, importance_spectrum,
                                        kurtosis_per_model, plots_from_report, pruning_curve)
from test_plugin import ENGINEERED_CONFTEST, SUITE, write_images
from test_verdicts import QUIET

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SIZE = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))
RED = (214, 39, 40)


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def assert_readable(png: bytes) -> np.ndarray:
    """Check that a PNG has the plot size, is not one colour and has drawn (non-white) content."""
    pixels = decode(png)
    assert pixels.shape[1::-1] == SIZE
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 20
    assert (pixels.min(axis=2) < 200).mean() > 0.01
    return pixels


def count_colour(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 10) -> int:
    return int((np.abs(pixels.astype(int) - np.array(colour)).max(axis=2) <= tolerance).sum())


@pytest.fixture
def report(pytester: pytest.Pytester) -> dict:
    pytester.makeconftest(ENGINEERED_CONFTEST)
    pytester.makefile(".yaml", sig=SUITE)
    write_images(pytester.path / "images")
    result = pytester.runpytest(*QUIET, "sig.yaml", "--robsig-model", "engineered", "--robsig-model", "weakhead",
                                "--robsig-report", "report.json", "--robsig-html", "report.html",
                                "--robsig-plots", "plots")
    result.assert_outcomes(passed=5, failed=1)
    data = json.loads((pytester.path / "report.json").read_text())
    data["_html"] = (pytester.path / "report.html").read_text()
    data["_plots"] = sorted(path.name for path in (pytester.path / "plots").iterdir())
    return data


def test_plots_written_for_each_outcome(report):
    assert report["_plots"] == [
        "importance-tail-engineered-images.png",
        "importance-tail-weakhead-images.png",
        "kurtosis.png",
        "pruning-pruning-engineered-images.png",
        "pruning-pruning-weakhead-images.png",
    ]


def test_report_plots_decode(report):
    for plot in plots_from_report(report):
        assert_readable(plot.png)


def test_importance_marks_privileged_directions():
    spectrum = sorted([0.5] + [0.01 * (1 + index / 100) for index in range(99)], reverse=True)
    flat = sorted([0.01 * (1 + index / 100) for index in range(100)], reverse=True)
    marked = assert_readable(importance_spectrum(spectrum, 5.0, "outlier"))
    unmarked = assert_readable(importance_spectrum(flat, 5.0, "flat"))
    # The red threshold line is in both plots; the marker of the one privileged direction adds red pixels.
    assert count_colour(marked, RED) > count_colour(unmarked, RED) + 20


def test_pruning_curve_draws_er_when_present():
    curve = {"fractions": [0.0, 0.4, 0.8], "accuracy": [0.8, 0.79, 0.7], "agreement": [1.0, 0.95, 0.8]}
    purple = (148, 103, 189)
    without = assert_readable(pruning_curve(curve, 0.8, "no er"))
    with_er = assert_readable(pruning_curve({**curve, "er": [0.1, 0.09, 0.05]}, 0.8, "er"))
    assert count_colour(without, purple) == 0
    assert count_colour(with_er, purple) > 50


def test_kurtosis_bars_coloured_by_threshold():
    both = assert_readable(kurtosis_per_model([("zero-shot", 25.0), ("finetuned", 3.5)], 6.0, "k"))
    green = (44, 160, 44)
    assert count_colour(both, green) > 1000
    assert count_colour(both, RED) > 1000
    passing = assert_readable(kurtosis_per_model([("zero-shot", 25.0)], 6.0, "k"))
    # Only the dashed threshold line is red when every bar passes.
    assert count_colour(passing, RED) < count_colour(both, RED) / 3


def test_cka_and_concept_plots_drawn_from_details():
    report = {"results": [{
        "id": "cka", "model": "m", "params": {}, "outcomes": [{
            "dataset": "images", "metric": "cka", "value": 0.4,
            "details": {"cka_per_layer": {"block1": 0.99, "block2": 0.9, "head": 0.4},
                        "concepts_per_category": {"object": 40, "texture": 12, "colour": 3}},
        }],
    }]}
    plots = plots_from_report(report)
    assert [plot.name for plot in plots] == ["cka-cka-m-images", "concepts-cka-m-images"]
    for plot in plots:
        assert_readable(plot.png)
    assert_readable(cka_per_layer(["a", "b"], [0.9, 0.5], "t"))
    assert_readable(concepts_per_category({"scene": 5}, "t"))


def test_plots_read_er_curve_and_category_metrics():
    report = {"results": [
        {"id": "pruning", "model": "m", "params": {"fraction": 0.8}, "outcomes": [{
            "dataset": "imagenet+shifts", "metric": "er_drop", "value": 0.01, "metrics": {},
            "details": {"er_curve": {"fractions": [0.0, 0.5, 0.8], "effective_robustness": [0.3, 0.28, -0.02]}}}]},
        {"id": "concepts", "model": "m", "params": {}, "outcomes": [{
            "dataset": "broden", "metric": "n_unique", "value": 12.0, "details": {},
            "metrics": {"per_category": {"object": {"scored": 30, "encoded": 9}, "colour": {"scored": 5, "encoded": 3}}}}]},
    ]}
    plots = plots_from_report(report)
    assert [plot.name for plot in plots] == ["pruning-pruning-m-imagenet_shifts", "concepts-concepts-m-broden"]
    purple = (148, 103, 189)
    assert count_colour(assert_readable(plots[0].png), purple) > 50
    assert_readable(plots[1].png)


def test_plots_skip_absent_details():
    report = {"results": [{"id": "x", "model": "m", "params": {}, "outcomes": [
        {"dataset": "d", "metric": "agreement", "value": None, "details": {}}]}]}
    assert plots_from_report(report) == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: importance_spectrum([0.0, float("nan")], 5.0, "t"), "spectrum: needs at least one positive"),
        (lambda: pruning_curve({"fractions": [0.0]}, 0.8, "t"), "curve: needs `fractions` and at least one"),
        (lambda: kurtosis_per_model([("m", float("nan"))], 6.0, "t"), "values: needs at least one finite kurtosis"),
        (lambda: cka_per_layer(["a"], [None], "t"), "values: needs at least one finite CKA value"),
        (lambda: concepts_per_category({}, "t"), "counts: needs at least one category"),
    ],
)
def test_plots_reject_empty_input(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_html_is_self_contained(report):
    page = report["_html"]
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r'(src|href)="(?!data:)', page)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 5
    for encoded in images:
        assert_readable(base64.b64decode(encoded))


def test_html_lists_verdicts_and_provenance(report):
    page = report["_html"]
    # One badge per table row, and one per verdict in the summary line at the top.
    assert page.count('<span class="verdict pass">pass</span>') == 5 + 1
    assert page.count('<span class="verdict fail">fail</span>') == 1 + 1
    assert '<p class="summary"><span><span class="verdict pass">pass</span> 5</span>' in page
    assert "<h2>weakhead</h2>" in page
    fingerprint = report["data"]["engineered"]["images"]["fingerprint"][:16]
    assert f"fingerprint <code>{fingerprint}</code>" in page


def test_html_escapes_text():
    report = {"summary": {"pass": 1}, "results": [{
        "suite": "s", "id": "k", "check": "c", "model": "<script>alert(1)</script>", "severity": "fail",
        "verdict": "pass", "message": "", "missing_data": [], "errors": {}, "position": 0,
        "outcomes": [{"dataset": "d", "metric": "m", "value": 1.0, "threshold": ">= 0", "passed": True,
                      "n_images": 1, "explanation": "a < b", "metrics": {}, "details": {}}]}]}
    page = render_html(report)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &lt; b" in page


def test_html_renders_in_chromium(report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium on PATH; install it (apt-get install chromium) to render the HTML report")
    page = tmp_path / "report.html"
    page.write_text(report["_html"])
    shot = tmp_path / "shot.png"
    profile = tempfile.mkdtemp(dir=tmp_path)
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--hide-scrollbars", "--window-size=1200,2600", f"--screenshot={shot}", page.as_uri()]
    completed = subprocess.run(command, capture_output=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2600, 1200)
    # The page shows the verdict badges (green and red backgrounds) and the plots (matplotlib blue).
    assert count_colour(pixels, (216, 240, 216), tolerance=3) > 200
    assert count_colour(pixels, (248, 212, 212), tolerance=3) > 50
    assert count_colour(pixels, (31, 119, 180), tolerance=12) > 500
    if os.environ.get("ROBSIG_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["ROBSIG_KEEP_SCREENSHOT"])
