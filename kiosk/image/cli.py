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
    sp.add_argument("--update-keys", type=Path, metavar="DIR",
                    help="the update CA whose certificate the unit trusts (default: $KIOSK_UPDATE_KEYS or "
                         "/var/lib/kiosk-image/update-keys, made on first use)")

    sp = sub.add_parser("bundle", help="make a signed RAUC update bundle from a built image (as root)")
    sp.add_argument("image", type=Path, help="the .img that build wrote (its .manifest.json beside it)")
    sp.add_argument("--out", type=Path, required=True, metavar="DIR")
    sp.add_argument("--update-keys", type=Path, metavar="DIR", help="as for build: the signing key and its CA")

    sp = sub.add_parser("update-keys", help="make a new update CA and signing key (once per municipality)")
    sp.add_argument("dir", type=Path)

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
                                                   keep_work=args.keep_work,
                                                   update_keys=args.update_keys or build.DEFAULT_UPDATE_KEYS))
            except (build.BuildError, recipe.RecipeError) as exc:
                fail(str(exc))
            print(result.image)
            print(result.compressed)
            print(result.manifest)
        case "bundle":
            from kiosk.image import build, bundle
            try:
                path, release = bundle.make(args.image, args.out, args.update_keys or build.DEFAULT_UPDATE_KEYS,
                                            build.DEFAULT_CACHE)
            except bundle.BundleError as exc:
                fail(str(exc))
            print(path)
            print(f"{release.version} {release.arch} {release.bytes} bytes sha256 {release.sha256}")
        case "update-keys":
            from kiosk.image import rauc
            try:
                print(rauc.create_keys(args.dir))
            except FileExistsError as exc:
                fail(str(exc))
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
