"""The image under test, built once per test run for every module that boots or updates it.

A fixture here, not in one test module imported by another: an imported session fixture is
a second definition, and pytest ran the 8-17 minute build twice (once for test_boot.py, once
for test_update.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: Where a run's image manifests are kept (the build's package list, for a look afterwards).
ARTIFACTS = Path(os.environ.get("KIOSK_IMAGE_ARTIFACTS", "/var/tmp/kiosk-image-test"))


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per test run with `kiosk-image build` (KIOSK_TEST_IMAGE reuses one while developing)."""
    if given := os.environ.get("KIOSK_TEST_IMAGE"):
        return Path(given)
    out = tmp_path_factory.mktemp("image-build")
    proc = subprocess.run([sys.executable, "-m", "kiosk.image.cli", "build", "--arch", "amd64", "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"kiosk-image build failed:\n{proc.stderr[-4000:]}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for manifest in out.glob("*.manifest.json"):
        shutil.copy(manifest, ARTIFACTS / manifest.name)
    return out / "skaermbesoeg-kiosk-amd64.img"
