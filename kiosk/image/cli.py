"""``kiosk-image``: build, provision, flash and audit the kiosk's OS image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import kiosk
from kiosk.cli_util import fail
from kiosk.image import recipe


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiosk-image", description="Skærmbesøg kiosk: the unit's OS image")
    p.add_argument("--version", action="version", version=kiosk.__version__)
    sub = p.add_subparsers(dest="cmd", required=True)

    sp = sub.add_parser("build", help="build the image (as root): Debian packages, our wheels, A/B layout")
    sp.add_argument("--arch", choices=recipe.ARCHES, required=True)
    sp.add_argument("--out", type=Path, required=True, metavar="DIR")
    sp.add_argument("--debug", action="store_true", help="a root login on the serial console (never for citizens)")
    sp.add_argument("--keep-work", action="store_true", help="keep the root tree in DIR/.work-ARCH")

    sp = sub.add_parser("provision", help="write a provisioning file into an image's config partition")
    sp.add_argument("image", type=Path)
    sp.add_argument("--file", type=Path, required=True, help="the provisioning file from kiosk-server enroll-token")

    sp = sub.add_parser("flash", help="write an image to a removable medium and read it back")
    sp.add_argument("image", type=Path)
    sp.add_argument("--device", type=Path, required=True, help="the whole medium, e.g. /dev/sdb")
    sp.add_argument("--force", action="store_true", help="also to a disk that is not removable")

    sp = sub.add_parser("audit", help="check an image's binaries and files against image/audit-policy.toml")
    sp.add_argument("image", type=Path)
    sp.add_argument("--policy", type=Path, help="default: image/audit-policy.toml")
    sp.add_argument("--json", action="store_true", help="every finding as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    match args.cmd:
        case "build":
            from kiosk.image import build
            try:
                result = build.build(build.Options(recipe.load(args.arch), args.out, args.debug,
                                                   keep_work=args.keep_work))
            except (build.BuildError, recipe.RecipeError) as exc:
                fail(str(exc))
            print(result.image)
            print(result.compressed)
            print(result.manifest)
        case "provision":
            from kiosk.image import provision
            try:
                print(provision.provision(args.image, args.file))
            except provision.ProvisionError as exc:
                fail(str(exc))
        case "flash":
            from kiosk.image import flash
            try:
                flash.flash(args.image, args.device, force=args.force)
            except flash.FlashError as exc:
                fail(str(exc))
        case "audit":
            from kiosk.image import audit
            try:
                return audit.main(args.image, args.policy, as_json=args.json)
            except audit.AuditError as exc:
                fail(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
