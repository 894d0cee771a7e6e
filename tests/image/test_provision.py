"""Provisioning an image file with mtools: no root, no mount; bad files refused at the desk."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from kiosk.image import layout, provision
from kiosk.protocol import provisioning
from tests.image.test_layout import partitioned

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("sfdisk", "mkfs.vfat", "mcopy")),
                                reason="needs fdisk, dosfstools and mtools")

GOOD = provisioning.Provisioning("https://kiosk.testby.dk:8443", "ab" * 32, "t" * 40, "Testby Kommune")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A small disk with the kiosk's partition table and a formatted config partition."""
    p = layout.plan("amd64", config_mib=4, boot_mib=1, root_mib=1, data_mib=1)
    img = partitioned(tmp_path / "kiosk.img", p)
    fat = tmp_path / "config.fat"
    subprocess.run(["mkfs.vfat", "-C", "-n", "CONFIG", str(fat), "4096"], check=True, capture_output=True)
    with img.open("r+b") as dst:
        dst.seek(p["config"].offset)
        dst.write(fat.read_bytes())
    return img


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "provision.yaml"
    f.write_text(text)
    return f


def test_the_file_lands_in_the_config_partition_byte_for_byte(image: Path, tmp_path: Path) -> None:
    f = write(tmp_path, provisioning.render(GOOD))
    message = provision.provision(image, f)
    assert "Testby Kommune" in message
    assert provision.read(image) == f.read_bytes()
    # a second provisioning replaces the first
    other = provisioning.Provisioning("https://other.dk", "cd" * 32, "u" * 40, "Anden Kommune")
    provision.provision(image, write(tmp_path, provisioning.render(other)))
    assert provisioning.parse(provision.read(image) or b"").municipality == "Anden Kommune"


@pytest.mark.parametrize(("text", "why"), [
    ("server_url: http://x.dk\nca_sha256: " + "ab" * 32 + "\ntoken: " + "t" * 40 + "\nmunicipality: X\n", "https"),
    ("just words", "mapping"),
    (provisioning.render(provisioning.Provisioning("https://x.dk", "ab" * 32, None, "X")), "no token left"),
])
def test_a_bad_file_is_refused_and_the_image_is_untouched(image: Path, tmp_path: Path, text: str, why: str) -> None:
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    with pytest.raises(provision.ProvisionError, match=why):
        provision.provision(image, write(tmp_path, text))
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before


def test_a_compressed_image_or_a_foreign_file_is_refused(tmp_path: Path) -> None:
    f = write(tmp_path, provisioning.render(GOOD))
    with pytest.raises(provision.ProvisionError, match="compressed"):
        provision.provision(tmp_path / "kiosk.img.zst", f)
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 8192)
    with pytest.raises(provision.ProvisionError, match="no GPT"):
        provision.provision(junk, f)
