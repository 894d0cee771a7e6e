"""One call from a shell, as ``make demo`` makes it: the result as JSON on stdout.

    python -m kiosk.caregiver --console URL --user anne --citizen ID --password-stdin
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

import aiohttp

from .call import CallResult
from .client import CaregiverClient
from .errors import CallError
from .media import TestMedia


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kiosk.caregiver",
        description="Call one citizen as a caregiver, with test media, and print the result as JSON.")
    p.add_argument("--console", required=True, help="the console's address, e.g. http://127.0.0.1:8080")
    p.add_argument("--user", required=True, help="the caregiver's user name")
    p.add_argument("--password-stdin", action="store_true", required=True,
                   help="read the password from the first line of stdin (never from the command line)")
    p.add_argument("--citizen", required=True, metavar="CITIZEN_ID")
    p.add_argument("--talk", type=float, default=5.0, metavar="SECONDS",
                   help="how long to stay in the call once media flows (default 5)")
    p.add_argument("--answer-timeout", type=float, default=60.0, metavar="SECONDS")
    p.add_argument("--size", type=_size, default=(320, 240), help="the test video's size (default 320x240)")
    p.add_argument("--fps", type=int, default=15)
    return p


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    try:
        size = int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is WIDTHxHEIGHT, e.g. 640x480, not {text!r}") from None
    if min(size) <= 0:
        raise argparse.ArgumentTypeError(f"a size must be positive, not {text!r}")
    return size


async def _one_call(args: argparse.Namespace, password: str) -> CallResult:
    width, height = args.size
    async with CaregiverClient(args.console, media=TestMedia(width, height, args.fps)) as client:
        await client.login(args.user, password)
        return await client.call(args.citizen, talk_seconds=args.talk, answer_timeout=args.answer_timeout)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiortc", "aioice", "libav"):  # they log SDP and addresses at DEBUG
        logging.getLogger(noisy).setLevel(logging.WARNING)
    password = sys.stdin.readline().rstrip("\n")
    try:
        result = asyncio.run(_one_call(args, password))
    except (CallError, aiohttp.ClientError, OSError) as exc:
        print(f"kiosk.caregiver: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.as_dict()))
    return 0 if result.video_frames > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
