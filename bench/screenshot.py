"""A look at the screen: how large the picture is and what making it costs, per screen.

Run from the repository root:

    .venv/bin/python bench/screenshot.py [--rounds 5] [--json build/bench-screenshot.json]

For each golden screen in ``tests/ui/golden/da/`` (1280x800, the real window's pixels)
it runs what the unit runs after the citizen's yes (:func:`kiosk.ui.screen_capture.fit_png`:
PNG at the cap, halved until it fits) and what the unit and the server run on the result
(:func:`kiosk.protocol.screenshot.check_png`), ``--rounds`` times, and reports the PNG's
bytes and size and the median milliseconds of each. Reading the framebuffer itself
(``glReadPixels``) is not in it: it needs the window (see tests/ui/test_screen_look.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from kiosk.protocol.screenshot import check_png  # noqa: E402
from kiosk.ui.screen_capture import fit_png  # noqa: E402

SCREENS = ("idle", "ringing", "in-call", "consent", "setup-network")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for name in SCREENS:
        screen = Image.open(ROOT / "tests" / "ui" / "golden" / "da" / f"{name}.png").convert("RGB")
        encode_ms, check_ms = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            data = fit_png(screen)
            encode_ms.append(1000 * (time.perf_counter() - started))
            started = time.perf_counter()
            width, height = check_png(data)
            check_ms.append(1000 * (time.perf_counter() - started))
        rows.append({"screen": name, "bytes": len(data), "size": f"{width}x{height}",
                     "encode_ms": statistics.median(encode_ms), "check_ms": statistics.median(check_ms)})
        print(f"{name:14} {len(data):7d} bytes {width}x{height}  make {rows[-1]['encode_ms']:6.1f} ms  "
              f"check {rows[-1]['check_ms']:5.1f} ms", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
