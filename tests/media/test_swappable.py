"""The track the call holds stays the same while its source changes."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import av
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload
from aiortc.mediastreams import VIDEO_CLOCK_RATE

from kiosk.media.keyframes import is_keyframe
from kiosk.media.sources import AUDIO_SAMPLES, lavfi_pattern_spec, lavfi_tone_spec, open_source
from kiosk.media.swappable import SwappableTrack

from .calls import luma_spread, next_audio, next_video


async def test_without_a_source_it_sends_a_calm_placeholder_at_a_low_rate() -> None:
    track = SwappableTrack("video", placeholder_fps=10, size=(320, 240))
    started = time.monotonic()
    frames = [await next_video(track) for _ in range(6)]
    elapsed = time.monotonic() - started
    assert all(isinstance(f, av.VideoFrame) and luma_spread(f) == 0 for f in frames)
    assert (frames[0].width, frames[0].height) == (320, 240)
    assert 0.4 < elapsed < 1.0  # 10 fps: the first at once, then 5 more
    assert track.filler_frames == 6


async def test_without_a_microphone_it_sends_silence_every_20ms() -> None:
    track = SwappableTrack("audio")
    started = time.monotonic()
    frames = [await next_audio(track) for _ in range(10)]
    elapsed = time.monotonic() - started
    assert all(f.samples == AUDIO_SAMPLES and not any(bytes(f.planes[0])) for f in frames)
    assert 0.15 < elapsed < 0.4
    assert [f.pts for f in frames] == [i * AUDIO_SAMPLES for i in range(10)]


async def test_swapping_mid_wait_switches_at_once_and_time_never_goes_back() -> None:
    track = SwappableTrack("video", placeholder_fps=1)
    placeholder = await next_video(track)  # the next placeholder is a second away
    pending = asyncio.ensure_future(next_video(track))
    await asyncio.sleep(0.05)
    source = await open_source(lavfi_pattern_spec())
    track.swap(source)
    frame = await asyncio.wait_for(pending, 0.5)
    assert luma_spread(frame) > 50  # the test pattern, not the placeholder
    more = [await next_video(track) for _ in range(5)]
    assert track.swap(None) is source
    source.stop()
    back = await next_video(track)
    assert luma_spread(back) == 0
    seen = [placeholder, frame, *more, back]
    pts = [f.pts for f in seen if f.pts is not None]
    assert len(pts) == len(seen) and pts == sorted(pts) and len(set(pts)) == len(pts)
    assert all(f.time_base == Fraction(1, VIDEO_CLOCK_RATE) for f in [frame, back])


async def test_a_source_that_ends_is_replaced_by_the_placeholder() -> None:
    source = await open_source(lavfi_pattern_spec(160, 120))
    track = SwappableTrack("video", source, placeholder_fps=20)
    await next_video(track)
    source.stop()  # as if the camera had been unplugged
    frame = await asyncio.wait_for(next_video(track), 1.0)
    assert luma_spread(frame) == 0 and track.source is None
    assert (frame.width, frame.height) == (160, 120)  # keeps the size: no encoder reset


async def test_audio_timestamps_stay_continuous_across_a_microphone_change() -> None:
    track = SwappableTrack("audio")
    first = await open_source(lavfi_tone_spec(440))
    track.swap(first)
    frames = [await next_audio(track) for _ in range(5)]
    second = await open_source(lavfi_tone_spec(660))
    replaced = track.swap(second)
    assert replaced is first
    replaced.stop()
    frames += [await next_audio(track) for _ in range(5)]
    second.stop()
    assert [f.pts for f in frames] == [i * AUDIO_SAMPLES for i in range(10)]


async def test_capture_frames_do_not_force_the_encoder_into_key_frames_only() -> None:
    source = await open_source(lavfi_pattern_spec(320, 240))
    raw = await next_video(source)
    assert raw.pict_type == av.video.frame.PictureType.I  # what capture decoders say
    track = SwappableTrack("video", source)
    encoder = Vp8Encoder()  # aiortc's own: it obeys pict_type
    keyframes = []
    for _ in range(10):
        payloads, _ = encoder.encode(await next_video(track))
        keyframes.append(is_keyframe(b"".join(vp8_depayload(p) for p in payloads)))
    source.stop()
    assert keyframes == [True] + [False] * 9



async def test_muted_sends_the_placeholder_and_a_new_device_does_not_unmute() -> None:
    camera = await open_source(lavfi_pattern_spec(160, 120))
    track = SwappableTrack("video", camera, placeholder_fps=20)
    assert luma_spread(await next_video(track)) > 50
    track.muted = True  # the citizen pressed "camera off"
    assert luma_spread(await asyncio.wait_for(next_video(track), 1.0)) == 0
    other = await open_source(lavfi_pattern_spec(160, 120))
    track.swap(other)  # a camera plugged in meanwhile
    for _ in range(3):
        assert luma_spread(await asyncio.wait_for(next_video(track), 1.0)) == 0
    track.muted = False
    assert luma_spread(await asyncio.wait_for(next_video(track), 1.0)) > 50
    camera.stop()
    other.stop()


async def test_stepped_down_it_sends_half_the_size_at_half_the_rate_and_steps_back_up() -> None:
    source = await open_source(lavfi_pattern_spec(320, 240, 30))
    track = SwappableTrack("video", source)
    try:
        full = await next_video(track)
        assert isinstance(full, av.VideoFrame) and (full.width, full.height) == (320, 240)
        track.stepped_down = True
        before = track.frames_from_source
        small = [await next_video(track) for _ in range(4)]
        assert all(isinstance(f, av.VideoFrame) and (f.width, f.height) == (160, 120) for f in small)
        assert track.frames_from_source - before == 8  # every other frame sent
        track.stepped_down = False
        back = await next_video(track)
        assert isinstance(back, av.VideoFrame) and (back.width, back.height) == (320, 240)
    finally:
        track.stop()
        source.stop()
