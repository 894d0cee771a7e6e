"""The rules of a look at the screen: what a picture must be, and when one may come at all."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kiosk.protocol import messages as m
from kiosk.protocol import screenshot
from kiosk.protocol.errors import ProtocolError


def png(width: int = 64, height: int = 40, noise: bool = False) -> bytes:
    image = Image.new("RGB", (width, height), (20, 60, 120))
    if noise:
        image = Image.frombytes("RGB", (width, height), random.Random(7).randbytes(width * height * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_a_sound_picture_gives_its_size() -> None:
    assert screenshot.check_png(png(64, 40)) == (64, 40)


def test_a_picture_over_the_cap_is_refused_before_it_is_unpacked() -> None:
    big = png(200, 200, noise=True)
    assert len(big) > m.MAX_SCREENSHOT_PNG_BYTES
    with pytest.raises(ProtocolError) as refused:
        screenshot.check_png(big)
    assert refused.value.reason == "oversized" and str(m.MAX_SCREENSHOT_PNG_BYTES) in refused.value.detail


@pytest.mark.parametrize(("data", "words"), [
    (b"GIF89a" + b"\0" * 40, "not a PNG"),
    (png()[:40], "does not decode"),  # cut off in the middle
    (png()[:-20] + b"\0" * 20, "does not decode"),  # a damaged end
])
def test_what_is_not_a_sound_png_is_refused_with_a_reason(data: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        screenshot.check_png(data)
    assert refused.value.reason == "invalid" and words in refused.value.detail


def test_a_small_file_claiming_a_huge_picture_is_refused_unread() -> None:
    """A decompression bomb: a few hundred bytes that would unpack to gigabytes."""
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    bomb = screenshot.PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10000)) \
        + chunk(b"IEND", b"")
    with pytest.raises(ProtocolError) as refused:
        screenshot.check_png(bomb)
    assert "60000x60000" in refused.value.detail


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_give_a_size_or_a_protocol_error(data: bytes) -> None:
    for candidate in (data, screenshot.PNG_SIGNATURE + data, png()[:33] + data):
        try:
            width, height = screenshot.check_png(candidate)
        except ProtocolError:
            continue
        assert 0 < width <= m.MAX_SCREENSHOT_SIDE and 0 < height <= m.MAX_SCREENSHOT_SIDE


def reply(answer: m.LookAnswer, picture: bytes | None = None, error: str | None = None) -> m.ScreenshotReply:
    return m.ScreenshotReply(request_id="c1", answer=answer, png=picture, error=error)


def test_the_picture_comes_only_after_a_yes_or_from_an_unassigned_unit() -> None:
    picture = png()
    assert screenshot.judge_reply(reply("yes", picture), asked_consent=True) == m.ScreenshotTaken(
        answer="yes", png=picture, width=64, height=40)
    assert screenshot.judge_reply(reply("unassigned", picture), asked_consent=False).png == picture
    assert screenshot.judge_reply(reply("no"), asked_consent=True) == m.ScreenshotTaken(answer="no")
    assert screenshot.judge_reply(reply("no-answer"), asked_consent=True) == m.ScreenshotTaken(answer="no-answer")


@pytest.mark.parametrize(("bad", "asked", "words"), [
    (reply("no", png()), True, "a picture came with the answer 'no'"),
    (reply("no-answer", png()), True, "a picture came with the answer 'no-answer'"),
    (reply("yes"), True, "no picture came"),
    (reply("unassigned", png()), True, "answered 'unassigned' where yes, no or no-answer was asked for"),
    (reply("yes", png()), False, "answered 'yes' where unassigned was asked for"),
    (reply("yes", b"not a png"), True, "not a PNG"),
])
def test_a_reply_that_breaks_the_rules_is_refused(bad: m.ScreenshotReply, asked: bool, words: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        screenshot.judge_reply(bad, asked)
    assert words in refused.value.detail


def test_a_screen_that_could_not_take_the_picture_says_why() -> None:
    with pytest.raises(ProtocolError) as refused:
        screenshot.judge_reply(reply("yes", error="no window"), asked_consent=True)
    assert refused.value.reason == "no-picture" and refused.value.detail == "no window"


def test_a_result_is_read_back_under_the_same_rules() -> None:
    taken = screenshot.judge_reply(reply("yes", png()), asked_consent=True)
    assert screenshot.read_result(m.to_builtins(taken)) == taken  # the picture travels as base64
    wrong_size = {**m.to_builtins(taken), "width": 65}
    with pytest.raises(ProtocolError, match="size"):
        screenshot.read_result(wrong_size)
    with pytest.raises(ProtocolError):
        screenshot.read_result({"answer": "maybe"})
    with pytest.raises(ProtocolError, match="a picture came"):
        screenshot.read_result({**m.to_builtins(taken), "answer": "no"})
