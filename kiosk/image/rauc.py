"""RAUC's files as text, and the update-signing keys.

The unit's ``/etc/rauc/system.conf`` names the A/B slot pairs (boot_X is the parent of
nothing but travels with root_X) and hands boot selection to ``/usr/lib/kiosk/rauc-boot``,
a custom backend that edits the same boot counters GRUB and U-Boot read (bootcfg.py), so
one counting scheme serves both bootloaders and the first boot of a fresh image alike.

``min-bundle-version`` is the image's own version: a unit refuses any bundle older than
the system it runs (anti-rollback), on either slot.

Keys: an update CA (its certificate is the unit's keyring, baked into the image) and a
signing key it certified. Neither is the server's command key; the CA key can live
offline once the signing certificate exists.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kiosk.image.recipe import Arch
from kiosk.protocol.update import rauc_version

KEYRING_IN_ROOT = "etc/rauc/keyring.pem"
SYSTEM_CONF_IN_ROOT = "etc/rauc/system.conf"
#: RAUC's status (which bundle each slot holds) lives on the data partition: the root is read-only.
STATUS_FILE = "/data/rauc/status.raucs"
DATA_DIRECTORY = "/data/rauc"
BLOCK = 4096
HASH_BYTES = 32  # sha256, veritysetup's default


def compatible(name: str, arch: Arch) -> str:
    return f"{name}-{arch}"


def system_conf(name: str, arch: Arch, version: str) -> str:
    slots = ""
    for index, slot in enumerate(("a", "b")):
        slots += (f"\n[slot.rootfs.{index}]\ndevice=/dev/disk/by-partlabel/root_{slot}\ntype=raw\nbootname={slot}\n"
                  f"\n[slot.boot.{index}]\ndevice=/dev/disk/by-partlabel/boot_{slot}\ntype=raw\n"
                  f"parent=rootfs.{index}\n")
    return f"""# Skærmbesøg kiosk: RAUC on the unit (made by kiosk-image build; see kiosk/image/rauc.py).
[system]
compatible={compatible(name, arch)}
bootloader=custom
statusfile={STATUS_FILE}
# where RAUC keeps each slot's block-hash index: an adaptive install (bundle_manifest) fetches
# only the 4 KiB blocks neither slot already holds
data-directory={DATA_DIRECTORY}
mountprefix=/run/rauc
# anti-rollback: nothing older than this image itself ({version})
min-bundle-version={rauc_version(version)}

[handlers]
bootloader-custom-backend=/usr/lib/kiosk/rauc-boot

[keyring]
path=/{KEYRING_IN_ROOT}
check-crl=false

[streaming]
# RAUC's streaming helper (libcurl) drops to 'nobody' by default, which cannot read the unit's
# client key (root's, 0600): every stream then fails as "server not responding" (seen in QEMU).
# It stays root; it talks only to the pinned server (tls-ca), over mutual TLS, through a
# firewall that lets nothing else out.
sandbox-user=root
{slots}"""


def bundle_manifest(name: str, arch: Arch, version: str) -> str:
    return f"""[update]
compatible={compatible(name, arch)}
version={rauc_version(version)}
description={version}

[bundle]
format=verity

[image.rootfs]
filename=root.img
adaptive=block-hash-index

[image.boot]
filename=boot.vfat
adaptive=block-hash-index
"""


def verity_image_size(hash_offset: int) -> int:
    """Bytes of an erofs image of ``hash_offset`` bytes with veritysetup's hash tree after it
    (a 4 KiB superblock, then each level of 4 KiB blocks of sha256 hashes, top level first)."""
    if hash_offset <= 0 or hash_offset % BLOCK:
        raise ValueError(f"hash offset {hash_offset} is not a positive multiple of {BLOCK}")
    per_block = BLOCK // HASH_BYTES
    blocks, tree = hash_offset // BLOCK, 0
    while blocks > 1:  # a single data block's hash is the root hash itself: no tree
        blocks = math.ceil(blocks / per_block)
        tree += blocks
    return hash_offset + BLOCK + tree * BLOCK


# --------------------------------------------------------------------------- keys

CA_CERT, SIGNING_KEY, SIGNING_CERT, CA_KEY = "update-ca.pem", "signing.key.pem", "signing.pem", "update-ca.key.pem"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Skærmbesøg kiosk"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def create_keys(directory: Path, label: str = "update", years: int = 20) -> Path:
    """A new update CA and signing certificate in ``directory`` (which must not hold keys yet)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (directory / CA_CERT).exists():
        raise FileExistsError(f"{directory} holds update keys already; a second CA would lock units out")
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=365 * years)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{label} CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(f"{label} signing")).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .sign(ca_key, hashes.SHA256()))
    _write_key(directory / CA_KEY, ca_key)
    _write_key(directory / SIGNING_KEY, key)
    (directory / CA_CERT).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / SIGNING_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return directory
