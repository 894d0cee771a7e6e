"""The one call the UI makes: encoder chosen, loss recovery armed, devices fed."""

from __future__ import annotations

import asyncio

import pytest

from kiosk.media.audio import ECHO_CANCEL_SOURCE, RESTART_PAUSE, PipeWireMicrophone
from kiosk.media.encoders import installed_h264_encoder, probe_encoder
from kiosk.media.keyframes import installed_loss_recovery
from kiosk.media.session import start_media
from kiosk.media.sources import CaptureTrack
from tests.pipewire_fixture import PipeWire

from .calls import luma_spread, next_audio, next_video
from .fakeudev import FakeMonitor, camera, microphone
from .test_hotplug import wait_until


async def test_demo_media_starts_anywhere_and_follows_udev() -> None:
    monitor = FakeMonitor()
    media = await start_media(demo=True, monitor=monitor)
    try:
        assert installed_loss_recovery() is media.loss_recovery
        if probe_encoder("h264_v4l2m2m") is not None:
            assert not media.encoder.hardware and media.h264 is None
            assert installed_h264_encoder() is None
        # No camera or microphone on a CI machine: the demo sends test sources.
        for track in (media.devices.video, media.devices.audio):
            assert isinstance(track.source, CaptureTrack)
            assert track.source.spec.format == "lavfi"
        assert luma_spread(await next_video(media.devices.video)) > 50
        assert media.devices._watch is not None and not media.devices._watch.done()
        # udev announces a camera that cannot be opened (not a real device
        # here): after the retries the demo pattern is still what we send.
        media.devices.OPEN_RETRY_DELAY = 0.01
        pattern = media.devices.video.source
        monitor.emit(camera("add", "/dev/video-unopenable"))
        await wait_until(lambda: media.devices.video.source is not pattern, timeout=3.0)
        assert media.devices.policy.current("video") is None
        assert isinstance(media.devices.video.source, CaptureTrack)
        assert media.devices.video.source.spec.format == "lavfi"
        assert pattern is not None and pattern.readyState == "ended"  # not leaked
    finally:
        await media.close()
        monitor.close()


async def test_without_demo_a_kiosk_with_no_camera_sends_the_calm_placeholder() -> None:
    media = await start_media(demo=False, monitor=FakeMonitor())
    try:
        assert media.devices.video.source is None
        assert luma_spread(await next_video(media.devices.video)) == 0
    finally:
        await media.close()


@pytest.mark.slow
async def test_under_pipewire_the_call_sends_the_echo_cancelled_microphone(pipewire: PipeWire) -> None:
    """Not ALSA's microphone by udev (that would bypass the canceller): the
    canceller's source, whose capture PipeWire links to the microphone there is."""
    pipewire.add_speaker("room", priority=10)
    pipewire.add_microphone("mic", hears=["room"], priority=3000)
    monitor = FakeMonitor()
    media = await start_media(demo=True, monitor=monitor)
    try:
        microphone_track = media.devices.audio.source
        assert isinstance(microphone_track, PipeWireMicrophone)
        assert microphone_track.device == ECHO_CANCEL_SOURCE
        assert media.devices.policy.follow == ("video",)
        frame = await next_audio(media.devices.audio)
        assert frame.sample_rate == 48000 and media.devices.audio.frames_from_source == 1
        # PipeWire's graph: microphone -> canceller -> the call's recording stream.
        assert "mic:capture" in pipewire.links_to("echo-cancel-capture:input")
        await wait_until(lambda: pipewire.linked(f"{ECHO_CANCEL_SOURCE}:capture", "kiosk:input"), timeout=10.0)
        # udev's news of a microphone changes nothing: WirePlumber follows microphones.
        monitor.emit(microphone("add"))
        await media.devices.video.recv()
        assert media.devices.audio.source is microphone_track
    finally:
        await media.close()
        monitor.close()
    assert microphone_track.readyState == "ended"
    await microphone_track.stopped()



@pytest.mark.slow
async def test_a_microphone_recording_that_dies_mid_call_is_opened_again(pipewire: PipeWire) -> None:
    """The sound server restarted (here: its recording process killed): the call's
    microphone comes back by itself, and nothing is reopened after the call."""
    monitor = FakeMonitor()
    media = await start_media(demo=False, monitor=monitor)
    try:
        first = media.devices.audio.source
        assert isinstance(first, PipeWireMicrophone) and media.microphone is not None
        assert first._process is not None
        first._process.kill()
        await media.devices.audio.recv()  # the call reads on: the end is seen
        await wait_until(lambda: isinstance(media.devices.audio.source, PipeWireMicrophone)
                         and media.devices.audio.source is not first, timeout=10.0)
        again = media.devices.audio.source
        assert isinstance(again, PipeWireMicrophone) and again.readyState == "live"
        assert media.microphone.opened == 2
    finally:
        await media.close()
        monitor.close()
    assert again.readyState == "ended"
    await asyncio.sleep(2 * RESTART_PAUSE)
    assert media.microphone.opened == 2, "a microphone was opened after the call"
