"""``kiosk-image provision``: the provisioning file into an image's config partition.

No root and no mount: the partition is found in the GPT and written with mtools
(``mcopy -i IMAGE@@OFFSET``). The file is checked first with the same parser the unit
uses, so a wrong file is refused here, at the desk, not on the unit in a citizen's home.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from kiosk.image import gpt
from kiosk.protocol import provisioning
from kiosk.protocol.errors import ProtocolError

NAME = "kiosk-provision.yaml"


class ProvisionError(RuntimeError):
    pass


def _mtools(*args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(args, capture_output=True, check=False)
    except FileNotFoundError:
        raise ProvisionError("mtools is not installed (apt-get install mtools)") from None


def provision(image: Path, file: Path) -> str:
    if image.suffix in (".zst", ".xz", ".gz"):
        raise ProvisionError(f"{image} is compressed: provision the .img beside it (or unpack it first)")
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ProvisionError(f"cannot read the provisioning file: {exc}") from None
    try:
        prov = provisioning.parse(raw)
    except ProtocolError as exc:
        raise ProvisionError(f"{file} is not a valid provisioning file: {exc.detail}") from None
    if prov.token is None:
        raise ProvisionError(f"{file} has no token left (it was used): create a new one with "
                             "kiosk-server enroll-token create")
    try:
        config = gpt.find(image, "config")
    except (OSError, gpt.GptError) as exc:
        raise ProvisionError(str(exc)) from None
    target = f"{image}@@{config.offset}"
    done = _mtools("mcopy", "-o", "-i", target, str(file), f"::/{NAME}")
    if done.returncode != 0:
        raise ProvisionError(f"writing to the config partition failed: {done.stderr.decode(errors='replace')}")
    back = _mtools("mtype", "-i", target, f"::/{NAME}")
    if back.returncode != 0 or back.stdout != raw:
        raise ProvisionError("the provisioning file read back from the image differs from what was written")
    return f"{image}: provisioned for {prov.municipality} ({prov.server_url})"


def read(image: Path) -> bytes | None:
    """The provisioning file in an image's config partition, or None."""
    config = gpt.find(image, "config")
    back = _mtools("mtype", "-i", f"{image}@@{config.offset}", f"::/{NAME}")
    return back.stdout if back.returncode == 0 else None
