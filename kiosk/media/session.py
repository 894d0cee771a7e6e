"""Everything the kiosk UI starts once for media: the one entry point it calls.

    media = await start_media(demo=settings.demo)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=our_turn_servers))
    video = pc.addTransceiver(media.devices.video, direction="sendrecv")
    prefer_video_codec(video, media.encoder.mime_type)
    pc.addTrack(media.devices.audio)
    ...
    await media.close()

The microphone: under PipeWire it is the echo canceller's source
(:func:`kiosk.media.audio.pipewire_microphone`), and WirePlumber links that to
whichever microphone is plugged in, so only cameras are followed by udev here.
Without PipeWire the microphone is ALSA's, followed by udev like the camera.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiortc.mediastreams import MediaStreamTrack

from .audio import RESTART_PAUSE, AudioError, pipewire_microphone, pulse_names
from .encoders import EncoderChoice, H264EncoderInstallation, apply_encoder_choice, choose_video_encoder
from .hotplug import DevicePolicy, MediaDevices, MonitorLike, present_devices, udev_monitor
from .keyframes import LossRecovery, install_loss_recovery
from .sources import Kind, SourceSpec, lavfi_pattern_spec, lavfi_tone_spec
from .swappable import SwappableTrack

logger = logging.getLogger(__name__)


@dataclass
class DeviceMedia:
    encoder: EncoderChoice
    h264: H264EncoderInstallation | None
    loss_recovery: LossRecovery
    devices: MediaDevices
    microphone: PipeWireMicrophoneFeed | None = None

    async def close(self) -> None:
        if self.microphone is not None:
            await self.microphone.close()
        await self.devices.close()


async def start_media(demo: bool = False, monitor: MonitorLike | None = None) -> DeviceMedia:
    """Pick the encoder, arm loss recovery, open the devices and follow udev.

    ``demo`` sends test sources when no camera/microphone exists (demo, CI);
    otherwise the citizen's side sends a calm placeholder and silence. Under
    PipeWire the microphone is always its (echo-cancelled) source, demo or not.
    Without udev (a container, a test) hotplug is off, which is logged.
    """
    encoder = choose_video_encoder()
    h264 = apply_encoder_choice(encoder)
    loss_recovery = install_loss_recovery()
    fallback: dict[Kind, SourceSpec | None] | None = (
        {"video": lavfi_pattern_spec(), "audio": lavfi_tone_spec()} if demo else None
    )
    pipewire_sources = await pulse_names("sources")
    follow: tuple[Kind, ...] = ("video",) if pipewire_sources is not None else ("video", "audio")
    devices = MediaDevices(DevicePolicy(fallback=fallback, follow=follow))
    try:
        present = present_devices()
        if monitor is None:
            monitor = udev_monitor()
    except Exception as exc:  # noqa: BLE001 - pyudev raises several kinds; none must stop a call
        logger.warning("udev unavailable, camera/microphone hotplug is off: %s", exc)
        present = []
    await devices.start(present)
    microphone = None
    if pipewire_sources is not None:
        microphone = PipeWireMicrophoneFeed(devices.audio)
        await microphone.open(pipewire_sources)
    if monitor is not None:
        devices.watch(monitor)
    return DeviceMedia(encoder, h264, loss_recovery, devices, microphone)


class PipeWireMicrophoneFeed:
    """The call's audio track fed from PipeWire's microphone (the echo canceller's source).

    A recording that ends by itself (the sound server restarted) is opened
    again, at most once per :data:`~kiosk.media.audio.RESTART_PAUSE`, until
    :meth:`close`; meanwhile the track sends silence. A microphone that cannot
    be opened at all (no ``parec``) leaves the call with silence, logged.
    """

    def __init__(self, track: SwappableTrack) -> None:
        self.track = track
        self.opened = 0
        self._reopening: asyncio.Task[None] | None = None
        self._closed = False

    async def open(self, sources: list[str]) -> None:
        try:
            microphone = await pipewire_microphone(sources)
        except AudioError as exc:
            logger.warning("the microphone could not be opened, the call sends silence: %s", exc)
            return
        if self._closed:
            microphone.stop()
            return
        self.opened += 1
        microphone.on("ended", lambda: self._ended(microphone))
        previous = self.track.swap(microphone)
        if previous is not None and previous is not microphone:
            previous.stop()
        if microphone.readyState == "ended":  # before it was swapped in: not seen by _ended
            self._ended(microphone)

    def _ended(self, microphone: MediaStreamTrack) -> None:
        if self._closed or self.track.source is not microphone or self._reopening is not None:
            return  # closed with the call, or already replaced
        logger.info("the microphone's recording ended; it is opened again")
        self._reopening = asyncio.ensure_future(self._reopen())

    async def _reopen(self) -> None:
        sources = None
        while sources is None:
            await asyncio.sleep(RESTART_PAUSE)
            sources = await pulse_names("sources")  # None: no sound server (yet)
        self._reopening = None  # from here an end is a new end
        await self.open(sources)

    async def close(self) -> None:
        """The call ended: nothing is opened again (the devices close the microphone)."""
        self._closed = True
        if self._reopening is not None:
            self._reopening.cancel()
            await asyncio.gather(self._reopening, return_exceptions=True)
