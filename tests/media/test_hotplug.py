"""Cameras and microphones coming and going: pure policy, then a real call."""

from __future__ import annotations

import asyncio
import time

from aiortc import RTCPeerConnection
from hypothesis import given
from hypothesis import strategies as st

from kiosk.media.hotplug import (
    DeviceEvent,
    DevicePolicy,
    MediaDevices,
    UseSource,
    alsa_name,
    classify,
    event_from_udev,
    monitor_events,
)
from kiosk.media.loopback import connect
from kiosk.media.sources import Kind, SourceSpec, lavfi_pattern_spec, lavfi_tone_spec

from .calls import collect, longest_gap, luma_spread, next_video
from .fakeudev import FakeDevice, FakeMonitor, camera, microphone

CAM = "/dev/video0"
MIC = "/dev/snd/pcmC1D0c"


def never_camera(node: str, properties: object) -> bool:
    return False


def test_classify_knows_cameras_and_capture_pcms_only() -> None:
    cap = {"ID_V4L_CAPABILITIES": ":capture:"}
    assert classify("add", "video4linux", CAM, cap) == DeviceEvent("add", "video", CAM)
    assert classify("add", "video4linux", "/dev/video1", {"ID_V4L_CAPABILITIES": ":"}) is None
    assert classify("add", "video4linux", "/dev/video10", {}, is_camera=never_camera) is None
    assert classify("remove", "video4linux", CAM, {}) == DeviceEvent("remove", "video", CAM)
    assert classify("add", "sound", MIC, {}) == DeviceEvent("add", "audio", MIC)
    assert classify("add", "sound", "/dev/snd/pcmC1D0p", {}) is None  # speaker
    assert classify("add", "sound", "/dev/snd/controlC1", {}) is None
    assert classify("add", "sound", None, {}) is None  # the card itself has no node
    assert classify("change", "video4linux", CAM, cap) is None
    assert alsa_name("/dev/snd/pcmC2D3c") == "plughw:2,3"


def test_event_from_udev_reads_pyudev_shaped_devices() -> None:
    assert event_from_udev(camera("add")) == DeviceEvent("add", "video", CAM)
    assert event_from_udev(microphone("remove")) == DeviceEvent("remove", "audio", MIC)


def spec_for(kind: Kind, node: str) -> SourceSpec:
    return SourceSpec(kind, node, "fake", label=node)


def test_policy_follows_the_camera_out_and_back() -> None:
    policy = DevicePolicy(spec_for)
    assert policy.start() == [UseSource("video", None), UseSource("audio", None)]
    assert policy.handle(DeviceEvent("add", "video", CAM)) == [
        UseSource("video", spec_for("video", CAM), CAM)
    ]
    assert policy.handle(DeviceEvent("add", "video", "/dev/video2")) == []  # keep the current one
    assert policy.handle(DeviceEvent("remove", "video", "/dev/video2")) == []
    assert policy.handle(DeviceEvent("remove", "video", CAM)) == [UseSource("video", None)]
    assert policy.handle(DeviceEvent("remove", "video", CAM)) == []  # already gone
    assert policy.handle(DeviceEvent("add", "video", CAM))[0].node == CAM


def test_a_policy_following_only_cameras_ignores_microphones() -> None:
    """Under PipeWire: WirePlumber follows microphones, udev's are not ours to act on."""
    only_cameras: tuple[Kind, ...] = ("video",)
    policy = DevicePolicy(spec_for, follow=only_cameras)
    assert policy.start([DeviceEvent("add", "audio", MIC), DeviceEvent("add", "video", CAM)]) == [
        UseSource("video", spec_for("video", CAM), CAM)
    ]
    assert policy.handle(DeviceEvent("add", "audio", "/dev/snd/pcmC2D0c")) == []
    assert policy.handle(DeviceEvent("remove", "audio", MIC)) == []
    assert policy.current("audio") is None
    assert policy.handle(DeviceEvent("remove", "video", CAM)) == [UseSource("video", None)]


def test_policy_moves_to_another_camera_then_to_the_demo_fallback() -> None:
    demo = lavfi_pattern_spec()
    policy = DevicePolicy(spec_for, fallback={"video": demo})
    start = policy.start([DeviceEvent("add", "video", CAM), DeviceEvent("add", "video", "/dev/video2")])
    assert start[0].node == "/dev/video2" and start[1] == UseSource("audio", None)
    assert policy.lost("video", "/dev/video2") == [UseSource("video", spec_for("video", CAM), CAM)]
    assert policy.lost("video", CAM) == [UseSource("video", demo)]


events = st.lists(
    st.builds(
        DeviceEvent,
        st.sampled_from(["add", "remove"]),
        st.sampled_from(["video", "audio"]),
        st.sampled_from([CAM, "/dev/video2", MIC, "/dev/snd/pcmC2D0c"]),
    ),
    max_size=30,
)


@given(events)
def test_policy_always_uses_a_present_device_when_there_is_one(seq: list[DeviceEvent]) -> None:
    policy = DevicePolicy(spec_for)
    chosen: dict[str, str | None] = {"video": None, "audio": None}
    present: dict[str, set[str]] = {"video": set(), "audio": set()}
    for action in policy.start():
        chosen[action.kind] = action.node
    for event in seq:
        if event.action == "add":
            present[event.kind].add(event.node)
        else:
            present[event.kind].discard(event.node)
        for action in policy.handle(event):
            chosen[action.kind] = action.node
        for kind in ("video", "audio"):
            assert chosen[kind] == policy.current(kind)
            if present[kind]:
                assert chosen[kind] in present[kind]
            else:
                assert chosen[kind] is None


async def test_monitor_events_reads_a_udev_monitor_without_a_thread() -> None:
    monitor = FakeMonitor()
    stream = monitor_events(monitor)
    monitor.emit(FakeDevice("add", "video4linux", "/dev/video9", {"ID_V4L_CAPABILITIES": ":"}))
    monitor.emit(camera("add"))
    monitor.emit(microphone("add"))
    got = [await asyncio.wait_for(stream.__anext__(), 1.0) for _ in range(2)]
    await stream.aclose()
    monitor.close()
    assert got == [DeviceEvent("add", "video", CAM), DeviceEvent("add", "audio", MIC)]


def lavfi_devices(kind: Kind, node: str) -> SourceSpec:
    """Our "camera" and "microphone" are real PyAV lavfi sources."""
    return lavfi_pattern_spec(320, 240) if kind == "video" else lavfi_tone_spec()


async def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_camera_that_dies_before_udev_says_so_is_dropped_and_comes_back() -> None:
    devices = MediaDevices(DevicePolicy(lavfi_devices))
    await devices.start([DeviceEvent("add", "video", CAM)])
    camera_track = devices.video.source
    assert camera_track is not None
    await devices.video.recv()
    camera_track.stop()  # what ENODEV looks like from the capture thread
    await wait_until(lambda: devices.policy.current("video") is None)
    assert luma_spread(await next_video(devices.video)) == 0
    await devices.handle(DeviceEvent("remove", "video", CAM))  # late udev event: harmless
    await devices.handle(DeviceEvent("add", "video", CAM))
    assert devices.video.source is not None and devices.video.source is not camera_track
    assert luma_spread(await next_video(devices.video)) > 50
    await devices.close()


async def test_a_device_that_cannot_be_opened_falls_back() -> None:
    def broken(kind: Kind, node: str) -> SourceSpec:
        return SourceSpec(kind, "/dev/video-gone", "v4l2")

    devices = MediaDevices(DevicePolicy(broken))
    devices.OPEN_RETRY_DELAY = 0.01
    await devices.start([DeviceEvent("add", "video", CAM)])
    assert devices.video.source is None and devices.policy.current("video") is None
    await devices.close()


async def test_camera_removed_and_returned_mid_call(
    peers: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    a, b = peers
    monitor = FakeMonitor()
    devices = MediaDevices(DevicePolicy(lavfi_devices))
    await devices.start([DeviceEvent("add", "video", CAM), DeviceEvent("add", "audio", MIC)])
    devices.watch(monitor)
    video_sender = a.addTrack(devices.video)
    a.addTrack(devices.audio)
    received = collect(b)
    await connect(a, b)

    def latest_is_camera() -> bool:
        return bool(received.video) and luma_spread(received.video[-1][1]) > 50

    def latest_is_placeholder() -> bool:
        return bool(received.video) and luma_spread(received.video[-1][1]) < 10

    await wait_until(latest_is_camera)
    audio_before = len(received.audio)

    monitor.emit(camera("remove"))
    await wait_until(latest_is_placeholder)
    assert devices.video.source is None
    await asyncio.sleep(0.5)  # a while with no camera

    monitor.emit(camera("add"))
    await wait_until(latest_is_camera)
    await asyncio.sleep(0.3)

    assert video_sender.track is devices.video  # the call never saw a new track
    audio = received.audio[audio_before:]
    assert len(audio) > 40  # > 0.8 s of 20 ms frames...
    assert longest_gap(audio) < 0.25  # ...and audio never stopped
    await devices.close()
    monitor.close()
