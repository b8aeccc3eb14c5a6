"""Shared fixtures of the robsig test suite."""

from pathlib import Path

import pytest

#: Real ImageNet photos for tests; present next to the repository in the development workplace only.
IMAGENET_SAMPLES = Path(__file__).resolve().parent.parent / "shared" / "data" / "imagenet-samples"


@pytest.fixture(scope="session")
def imagenet_samples() -> Path:
    """Return the folder of 600 real ImageNet photos, or skip when this checkout has none next to it."""
    if not IMAGENET_SAMPLES.is_dir():
        pytest.skip(f"real ImageNet photos not found at {IMAGENET_SAMPLES} (they are not shipped with robsig)")
    return IMAGENET_SAMPLES
