"""The caller's photo on the ringing screen of the real window (Xvfb), beside the name, with
the answer button still most of the screen; compared with its golden image (see test_screens)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.server import photos
from kiosk.ui import theme
from tests.server.test_photos import encoded, portrait

from .images import colour_box, differing_share, load
from .test_screens import ARTIFACTS, GOLDEN, ROOT, TOLERANCE, to_rgb255
from .xvfb import kivy_env, xvfb_display  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_the_ringing_screen_shows_the_callers_photo(xvfb_display: str, tmp_path: Path) -> None:  # noqa: F811
    picture = tmp_path / "anne.png"
    picture.write_bytes(photos.normalize(encoded(portrait(), "JPEG")))  # as the server stores it
    out = ARTIFACTS / "photo"
    shutil.rmtree(out, ignore_errors=True)
    log = tmp_path / "driver.log"
    with log.open("w") as sink:
        proc = subprocess.run([sys.executable, "-m", "tests.ui.screen_driver", "photo", "--state",
                               str(tmp_path / "state"), "--out", str(out), "--photo", str(picture)],
                              env=kivy_env(xvfb_display, tmp_path / "kivy"), cwd=ROOT, stdout=sink,
                              stderr=subprocess.STDOUT, timeout=240)
    assert proc.returncode == 0, log.read_text(errors="replace")[-4000:]
    shot = load(out / "ringing-photo.png")

    answer = colour_box(shot, to_rgb255(theme.ANSWER))
    assert answer is not None
    left, top, right, bottom = answer
    assert (right - left) * (bottom - top) / (shot.width * shot.height) >= 0.40  # still most of the screen
    x, y, w, h = json.loads((out / "result.json").read_text())["answer_button"]
    # The widget a touch presses is the one seen (Kivy's y runs up, PIL's down).
    assert abs(x - left) <= 2 and abs((shot.height - y - h) - top) <= 2 and abs(w - (right - left)) <= 2

    # The photo sits left of the name, above the button: its skin colour is there, nowhere else.
    skin = colour_box(shot, (230, 180, 150), tolerance=20)
    assert skin is not None, "no photo on the ringing screen"
    assert skin[2] < shot.width * 0.35 and skin[3] < top, skin

    golden = GOLDEN / "da" / "ringing-photo.png"
    if os.environ.get("KIOSK_UPDATE_GOLDEN"):
        shutil.copy(out / "ringing-photo.png", golden)
    share = differing_share(shot, load(golden))
    assert share <= TOLERANCE, f"ringing-photo: {share:.2%} of the pixels differ from {golden} (see {out})"
