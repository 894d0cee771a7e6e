"""Every screen of the citizen's unit in a real Kivy window under Xvfb, looked at.

The driver (:mod:`tests.ui.screen_driver`) runs the real app in its own
process, walks through every screen with simulated touches and a real call,
and saves each screen as a PNG under ``build/test-artifacts/ui/<language>/``.
Here they are compared with the golden images in ``tests/ui/golden/`` (with a
tolerance; the caller's live video masked), and measured: the answer button's
share of the screen and its label's contrast, the video not black and moving.

To accept new looks after a deliberate change: ``KIOSK_UPDATE_GOLDEN=1`` and
look at every image in the golden folder before committing it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kiosk.ui import theme

from .images import Box, colour_box, differing_share, label_contrast, load, mean_luma
from .xvfb import kivy_env, xvfb_display  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
ARTIFACTS = Path(os.environ.get("KIOSK_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts")) / "ui"
SCREENS = ["not-ready", "awaiting-approval", "ready", "idle", "reminder", "ringing", "in-call", "in-call-later",
           "in-call-poor-link", "in-call-camera-off", "ended", "offline", "consent", "setup-pin", "setup-network",
           "setup-network-password", "setup-volume", "setup-info", "night"]
#: Shown by a differing share of pixels at most this (anti-aliasing, video edges): a moved or missing
#: line of text is several per cent.
TOLERANCE = 0.005


def to_rgb255(colour: theme.RGB) -> tuple[int, int, int]:
    r, g, b = (round(c * 255) for c in colour)
    return r, g, b


@pytest.fixture(scope="module", params=["da", "en"])
def run(request: pytest.FixtureRequest, xvfb_display: str, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
        ) -> tuple[str, Path, dict[str, Any]]:
    language = request.param
    work = tmp_path_factory.mktemp(f"screens-{language}")
    out = ARTIFACTS / language
    shutil.rmtree(out, ignore_errors=True)
    log = work / "driver.log"
    with log.open("w") as sink:
        proc = subprocess.run([sys.executable, "-m", "tests.ui.screen_driver", "screens", "--state",
                               str(work / "state"), "--out", str(out), "--language", language],
                              env=kivy_env(xvfb_display, work / "kivy"), cwd=ROOT, stdout=sink,
                              stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    assert "a=fingerprint" not in text and "a=candidate" not in text, "an SDP reached the log"
    return language, out, json.loads((out / "result.json").read_text())


def test_every_screen_was_reached_and_matches_its_golden_image(run: tuple[str, Path, dict[str, Any]]) -> None:
    language, out, result = run
    assert result["shots"] == SCREENS
    golden = GOLDEN / language
    if os.environ.get("KIOSK_UPDATE_GOLDEN"):
        golden.mkdir(parents=True, exist_ok=True)
        for name in SCREENS:
            shutil.copy(out / f"{name}.png", golden / f"{name}.png")
    width, height = result["window"]
    video: tuple[Box, ...] = ((0, 0, width, round(height * 0.78)),)  # the live pictures, never the same twice
    off: list[str] = []
    for name in SCREENS:
        share = differing_share(load(out / f"{name}.png"), load(golden / f"{name}.png"),
                                mask=video if name.startswith("in-call") else ())
        if share > TOLERANCE:
            off.append(f"{name}: {share:.2%} of the pixels differ")
    assert not off, f"screens differ from tests/ui/golden/{language} (see {out}): {off}"


def test_the_answer_button_is_most_of_the_screen_and_its_words_stand_out(
        run: tuple[str, Path, dict[str, Any]]) -> None:
    _language, out, result = run
    image = load(out / "ringing.png")
    box = colour_box(image, to_rgb255(theme.ANSWER))
    assert box is not None, "no answer-green on the ringing screen"
    left, top, right, bottom = box
    share = (right - left) * (bottom - top) / (image.width * image.height)
    assert share >= 0.40, f"the answer button covers {share:.0%} of the screen"
    # The widget the touch pressed is the one seen (Kivy's y runs up, PIL's down).
    x, y, w, h = result["answer_button"]
    assert abs(x - left) <= 2 and abs((image.height - y - h) - top) <= 2 and abs(w - (right - left)) <= 2
    ratio, _fill, text = label_contrast(image, box)
    assert ratio >= 7.0, f"the answer label's contrast is {ratio:.1f}:1"
    assert min(text) > 0.9  # white words, not an anti-aliased edge


def test_every_button_label_has_a_contrast_of_at_least_7(run: tuple[str, Path, dict[str, Any]]) -> None:
    _language, out, _result = run
    fills = {"ringing": theme.ANSWER, "in-call": theme.HANG_UP, "consent": theme.ANSWER,
             "setup-pin": theme.CONTROL, "in-call-camera-off": theme.CONTROL_ON}
    for name, fill in fills.items():
        image = load(out / f"{name}.png")
        if name.startswith("in-call"):  # the control bar, below the video
            image = image.crop((0, round(image.height * 0.78), image.width, image.height))
        box = colour_box(image, to_rgb255(fill))
        assert box is not None, f"no button of {fill} on {name}"
        ratio, _fill, _text = label_contrast(image, box)
        assert ratio >= 7.0, f"{name}: a label at {ratio:.1f}:1"


def test_the_call_shows_the_callers_moving_video_a_self_view_and_the_citizens_controls_work(
        run: tuple[str, Path, dict[str, Any]]) -> None:
    _language, out, result = run
    width, height = result["window"]
    video: Box = (round(width * 0.25), round(height * 0.05), round(width * 0.75), round(height * 0.7))
    first, later = load(out / "in-call.png"), load(out / "in-call-later.png")
    assert mean_luma(first, video) > 40, "the caller's video is black"
    assert differing_share(first.crop(video), later.crop(video), threshold=24) > 0.01, "the video stands still"
    # Textures are made once per frame size, never per frame: the caller's sender may step its
    # resolution down on a loaded machine (kiosk.media's VideoStep), which makes one more set.
    assert result["frames_shown"] >= 30 and 1 <= result["textures_made"] <= 3
    assert result["self_view_frames"] > 0
    assert result["camera_muted"] is True  # "camera off" reached the track the call sends
    assert result["hang_up"] == "hung-up"
    assert result["consent"] == [["support-1", "yes"]]
    assert result["idle_flips"] == 0, "the idle screen was redrawn while nothing changed"
    kiosk = result["kiosk"]
    assert kiosk["escape_refused"] and kiosk["close_refused"] and kiosk["still_running"]
    assert (kiosk["show_cursor"], kiosk["allow_screensaver"]) == ("0", "0")
    assert len(kiosk["input_providers"]) == 1, kiosk  # one touch source: two would double every touch
    assert result["typed"] == "Blåbærgrød"  # æ, ø, å and a capital from the on-screen keyboard
