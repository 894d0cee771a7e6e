"""Capture tracks over real PyAV sources (lavfi here, since CI has no camera)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import av
import pytest
from aiortc.mediastreams import MediaStreamError

from kiosk.media.sources import (
    AUDIO_RATE,
    AUDIO_SAMPLES,
    V4L2_CAP_DEVICE_CAPS,
    V4L2_CAP_VIDEO_CAPTURE,
    V4L2_CAP_VIDEO_M2M_MPLANE,
    CaptureTrack,
    camera_spec,
    is_capture_device,
    lavfi_pattern_spec,
    lavfi_tone_spec,
    microphone_spec,
    open_source,
    query_capture_device,
)

from .calls import next_audio, next_video


async def test_pattern_is_yuv420p_at_its_size_and_paced_like_a_camera() -> None:
    track = await open_source(lavfi_pattern_spec(320, 240, fps=30))
    started = time.monotonic()
    frames = [await next_video(track) for _ in range(16)]
    elapsed = time.monotonic() - started
    track.stop()
    assert all(isinstance(f, av.VideoFrame) for f in frames)
    assert {(f.width, f.height, f.format.name) for f in frames} == {(320, 240, "yuv420p")}
    # 16 frames at 30 fps take ~0.5 s: generated as fast as possible they would not.
    assert 0.35 < elapsed < 1.5


async def test_tone_comes_as_20ms_opus_ready_frames_with_continuous_timestamps() -> None:
    track = await open_source(lavfi_tone_spec())
    frames = [await next_audio(track) for _ in range(10)]
    track.stop()
    for frame in frames:
        assert isinstance(frame, av.AudioFrame)
        assert (frame.samples, frame.sample_rate, frame.format.name, frame.layout.name) == (
            AUDIO_SAMPLES,
            AUDIO_RATE,
            "s16",
            "stereo",
        )
    assert [f.pts for f in frames] == [i * AUDIO_SAMPLES for i in range(10)]


async def test_a_missing_camera_fails_to_open_with_an_os_error() -> None:
    with pytest.raises(OSError):
        await open_source(camera_spec("/dev/video-not-here"))


@pytest.mark.skipif("alsa" not in av.formats_available, reason="PyAV built without ALSA")
async def test_a_missing_microphone_fails_to_open_with_an_os_error() -> None:
    with pytest.raises(OSError):
        await open_source(microphone_spec("plughw:97,0"))


async def test_a_stopped_track_ends_and_its_reader_thread_exits() -> None:
    track = CaptureTrack(lavfi_pattern_spec(160, 120))
    await track.start()
    await track.recv()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()
    thread = track._thread
    assert thread is not None
    await asyncio.get_running_loop().run_in_executor(None, thread.join, 2.0)
    assert not thread.is_alive()


async def test_a_slow_consumer_gets_fresh_frames_not_a_backlog() -> None:
    track = await open_source(lavfi_pattern_spec(160, 120, fps=30))
    first = await next_video(track)
    await asyncio.sleep(0.5)  # 15 frames are "captured" meanwhile
    later = await next_video(track)
    track.stop()
    assert len(track._queue) <= 2
    assert later.pts is not None and first.pts is not None
    assert later.pts - first.pts >= 10  # we skipped ahead, not read old frames


async def test_a_cancelled_wait_loses_neither_a_frame_nor_the_end() -> None:
    spec = lavfi_pattern_spec(160, 120, fps=30)
    short = dataclasses.replace(spec, url=f"{spec.url}:duration=0.2", paced=False)  # 6 frames, then the end
    track = await CaptureTrack(short, max_queued=100).start()
    deadline = time.monotonic() + 10
    while track._thread is not None and track._thread.is_alive():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)  # the end's hand-over runs on the loop
    assert len(track._queue) == 7 and track._queue[-1] is None
    frames = []
    with pytest.raises(MediaStreamError):
        while True:
            track.next_item().cancel()  # a swap or a mute cancels a wait before its frame (or the end) is taken
            await asyncio.sleep(0)
            frames.append(await asyncio.wait_for(track.recv(), 5))
    assert len(frames) == 6


def test_only_capture_nodes_count_as_cameras() -> None:
    caps = V4L2_CAP_DEVICE_CAPS
    assert is_capture_device(caps, V4L2_CAP_VIDEO_CAPTURE)
    assert is_capture_device(V4L2_CAP_VIDEO_CAPTURE, 0)  # old driver: no device caps
    assert not is_capture_device(caps, 0)  # UVC metadata node
    assert not is_capture_device(caps, V4L2_CAP_VIDEO_M2M_MPLANE)  # Pi codec/ISP node
    assert not query_capture_device("/dev/null")  # not a V4L2 device at all
