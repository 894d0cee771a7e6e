"""Cameras and microphones coming and going, without a restart.

Three layers, so the decisions can be tested without devices:

- :func:`classify` turns one udev event (action, subsystem, node, properties)
  into a :class:`DeviceEvent` about a camera or a microphone, or ``None``.
- :class:`DevicePolicy` is pure: device events in, :class:`UseSource` actions
  out ("send from this camera", "send the filler").
- :class:`MediaDevices` is the edge: it reads a udev monitor (pyudev's, or
  anything with ``fileno()`` and ``poll()``), opens sources and swaps them into
  the call's :class:`~kiosk.media.swappable.SwappableTrack` objects.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiortc.mediastreams import MediaStreamTrack

from .sources import (
    Kind,
    SourceSpec,
    camera_spec,
    microphone_spec,
    open_source,
    query_capture_device,
)
from .swappable import SwappableTrack

logger = logging.getLogger(__name__)

Action = Literal["add", "remove"]
_ACTIONS: dict[str, Action] = {"add": "add", "remove": "remove"}  # udev's other actions are ignored
SUBSYSTEMS = ("video4linux", "sound")
# ALSA capture PCM nodes: /dev/snd/pcmC<card>D<device>c ("p" is playback).
_ALSA_CAPTURE = re.compile(r"/dev/snd/pcmC(\d+)D(\d+)c$")


@dataclass(frozen=True)
class DeviceEvent:
    action: Action
    kind: Kind
    node: str  # /dev/videoN, or the capture PCM /dev/snd/pcmCxDyc


@dataclass(frozen=True)
class UseSource:
    """Send ``kind`` from ``spec``; ``spec=None`` means the calm filler."""

    kind: Kind
    spec: SourceSpec | None
    node: str | None = None


def alsa_name(node: str) -> str | None:
    """``/dev/snd/pcmC1D0c`` → ``plughw:1,0`` (plughw converts formats for us)."""
    match = _ALSA_CAPTURE.match(node)
    return f"plughw:{match[1]},{match[2]}" if match else None


def udev_says_capture(node: str, properties: Mapping[str, str]) -> bool:
    """udev's v4l_id sets ID_V4L_CAPABILITIES; ask the driver if it did not."""
    caps = properties.get("ID_V4L_CAPABILITIES")
    if caps is not None:
        return ":capture:" in caps
    return query_capture_device(node)


def classify(
    action: str,
    subsystem: str,
    node: str | None,
    properties: Mapping[str, str],
    is_camera: Callable[[str, Mapping[str, str]], bool] = udev_says_capture,
) -> DeviceEvent | None:
    """One udev event → a camera/microphone event, or ``None`` if irrelevant."""
    event_action = _ACTIONS.get(action)
    if event_action is None or not node:
        return None
    if subsystem == "video4linux" and node.startswith("/dev/video"):
        # A removed node cannot be asked; the policy ignores unknown removals.
        if action == "remove" or is_camera(node, properties):
            return DeviceEvent(event_action, "video", node)
    elif subsystem == "sound" and alsa_name(node) is not None:
        return DeviceEvent(event_action, "audio", node)
    return None


def default_spec_for(kind: Kind, node: str) -> SourceSpec:
    if kind == "video":
        return camera_spec(node)
    name = alsa_name(node)
    assert name is not None
    return microphone_spec(name)


class DevicePolicy:
    """Which device each track should send from.  No I/O.

    Keep the current device while it is there; when it goes, take the most
    recently added one left, else the fallback (a test source in demo mode,
    otherwise the filler).  A device arriving while we have none is used.
    Only the kinds in ``follow`` are decided here; events of the others are
    ignored (under PipeWire, WirePlumber follows the microphones).
    """

    def __init__(
        self,
        spec_for: Callable[[Kind, str], SourceSpec] = default_spec_for,
        fallback: Mapping[Kind, SourceSpec | None] | None = None,
        follow: Collection[Kind] = ("video", "audio"),
    ) -> None:
        self._spec_for = spec_for
        self.follow = tuple(follow)
        self._fallback: dict[Kind, SourceSpec | None] = {"video": None, "audio": None}
        self._fallback.update(fallback or {})
        self._devices: dict[Kind, list[str]] = {"video": [], "audio": []}
        self._current: dict[Kind, str | None] = {"video": None, "audio": None}

    def current(self, kind: Kind) -> str | None:
        return self._current[kind]

    def start(self, present: Iterable[DeviceEvent] = ()) -> list[UseSource]:
        """Initial choice, from the devices present at start."""
        for event in present:
            if event.action == "add" and event.kind in self.follow and event.node not in self._devices[event.kind]:
                self._devices[event.kind].append(event.node)
        return [self._choose(kind) for kind in self.follow]

    def handle(self, event: DeviceEvent) -> list[UseSource]:
        if event.kind not in self.follow:
            return []
        devices = self._devices[event.kind]
        if event.action == "add":
            if event.node in devices:
                return []
            devices.append(event.node)
            if self._current[event.kind] is None:
                return [self._choose(event.kind)]
            return []
        return self.lost(event.kind, event.node)

    def lost(self, kind: Kind, node: str) -> list[UseSource]:
        """``node`` went away or stopped working."""
        devices = self._devices[kind]
        if node not in devices:
            return []
        devices.remove(node)
        if self._current[kind] == node:
            return [self._choose(kind)]
        return []

    def _choose(self, kind: Kind) -> UseSource:
        devices = self._devices[kind]
        if devices:
            node = devices[-1]
            self._current[kind] = node
            return UseSource(kind, self._spec_for(kind, node), node)
        self._current[kind] = None
        return UseSource(kind, self._fallback[kind], None)


# --- the edge ----------------------------------------------------------------


class MonitorLike(Protocol):
    """What we use of ``pyudev.Monitor``; tests pass a fake one."""

    def fileno(self) -> int: ...

    def poll(self, timeout: float | None = None) -> Any: ...


def event_from_udev(device: Any) -> DeviceEvent | None:
    return classify(
        device.action or "add",
        device.subsystem,
        device.device_node,
        dict(device.properties),
    )


def udev_monitor() -> MonitorLike:  # pragma: no cover - needs a udev daemon
    import pyudev

    monitor = pyudev.Monitor.from_netlink(pyudev.Context())
    for subsystem in SUBSYSTEMS:
        monitor.filter_by(subsystem)
    monitor.start()
    started: MonitorLike = monitor
    return started


def present_devices() -> list[DeviceEvent]:  # pragma: no cover - needs udev
    """Cameras and microphones already there at start, as 'add' events."""
    import pyudev

    context = pyudev.Context()
    events = []
    for subsystem in SUBSYSTEMS:
        for device in context.list_devices(subsystem=subsystem):
            event = classify("add", subsystem, device.device_node, dict(device.properties))
            if event is not None:
                events.append(event)
    return events


async def monitor_events(monitor: MonitorLike) -> AsyncGenerator[DeviceEvent, None]:
    """Device events from ``monitor``, read on the event loop without a thread."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(monitor.fileno(), ready.set)
    try:
        while True:
            await ready.wait()
            ready.clear()
            while (device := monitor.poll(timeout=0)) is not None:
                event = event_from_udev(device)
                if event is not None:
                    yield event
    finally:
        loop.remove_reader(monitor.fileno())


Opener = Callable[[SourceSpec], Awaitable[MediaStreamTrack]]


class MediaDevices:
    """The call's audio and video tracks, kept fed from whatever devices exist."""

    OPEN_ATTEMPTS = 3
    OPEN_RETRY_DELAY = 0.3  # a node can appear a moment before it can be opened

    def __init__(self, policy: DevicePolicy, opener: Opener = open_source) -> None:
        self.policy = policy
        self._opener = opener
        self.video = SwappableTrack("video")
        self.audio = SwappableTrack("audio")
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        self._losses: set[asyncio.Task[None]] = set()  # held, or the loop may drop them mid-way

    def track(self, kind: Kind) -> SwappableTrack:
        return self.video if kind == "video" else self.audio

    async def start(self, present: Iterable[DeviceEvent] = ()) -> None:
        await self.apply(self.policy.start(present))

    async def handle(self, event: DeviceEvent) -> None:
        logger.info("device %s: %s %s", event.action, event.kind, event.node)
        await self.apply(self.policy.handle(event))

    def watch(self, monitor: MonitorLike) -> asyncio.Task[None]:
        """Follow ``monitor`` in the background until :meth:`close`."""

        async def follow() -> None:
            async for event in monitor_events(monitor):
                await self.handle(event)

        self._watch = asyncio.ensure_future(follow())
        return self._watch

    async def apply(self, actions: list[UseSource]) -> None:
        async with self._lock:  # one swap at a time, in event order
            while actions:
                action = actions.pop(0)
                source = await self._open(action)
                if source is None and action.node is not None:
                    actions.extend(self.policy.lost(action.kind, action.node))
                    continue
                previous = self.track(action.kind).swap(source)
                if previous is not None and previous is not source:
                    previous.stop()

    async def _open(self, action: UseSource) -> MediaStreamTrack | None:
        if action.spec is None:
            return None
        for attempt in range(1, self.OPEN_ATTEMPTS + 1):
            try:
                source = await self._opener(action.spec)
            except (OSError, ValueError) as exc:  # av.FFmpegError is an OSError
                logger.warning(
                    "could not open %s (attempt %d): %s", action.spec.describe(), attempt, exc
                )
                await asyncio.sleep(self.OPEN_RETRY_DELAY)
                continue
            self._follow_end(action, source)
            return source
        return None

    def _follow_end(self, action: UseSource, source: MediaStreamTrack) -> None:
        """A source that ends by itself (unplugged before udev says so) is lost."""

        def ended() -> None:
            if self.track(action.kind).source is source and action.node is not None:
                loss = asyncio.ensure_future(self.apply(self.policy.lost(action.kind, action.node)))
                self._losses.add(loss)
                loss.add_done_callback(self._losses.discard)

        source.on("ended", ended)

    async def close(self) -> None:
        pending = [*self._losses, *([self._watch] if self._watch is not None else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for track in (self.video, self.audio):
            previous = track.swap(None)
            if previous is not None:
                previous.stop()
            track.stop()
