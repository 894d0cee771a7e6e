"""Everything the kiosk UI starts once for media: the one entry point it calls.

    media = await start_media(demo=settings.demo)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=our_turn_servers))
    video = pc.addTransceiver(media.devices.video, direction="sendrecv")
    prefer_video_codec(video, media.encoder.mime_type)
    pc.addTrack(media.devices.audio)
    ...
    await media.close()
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .encoders import EncoderChoice, H264EncoderInstallation, apply_encoder_choice, choose_video_encoder
from .hotplug import DevicePolicy, MediaDevices, MonitorLike, present_devices, udev_monitor
from .keyframes import LossRecovery, install_loss_recovery
from .sources import Kind, SourceSpec, lavfi_pattern_spec, lavfi_tone_spec

logger = logging.getLogger(__name__)


@dataclass
class DeviceMedia:
    encoder: EncoderChoice
    h264: H264EncoderInstallation | None
    loss_recovery: LossRecovery
    devices: MediaDevices

    async def close(self) -> None:
        await self.devices.close()


async def start_media(demo: bool = False, monitor: MonitorLike | None = None) -> DeviceMedia:
    """Pick the encoder, arm loss recovery, open the devices and follow udev.

    ``demo`` sends test sources when no camera/microphone exists (demo, CI);
    otherwise the citizen's side sends a calm placeholder and silence.
    Without udev (a container, a test) hotplug is off, which is logged.
    """
    encoder = choose_video_encoder()
    h264 = apply_encoder_choice(encoder)
    loss_recovery = install_loss_recovery()
    fallback: dict[Kind, SourceSpec | None] | None = (
        {"video": lavfi_pattern_spec(), "audio": lavfi_tone_spec()} if demo else None
    )
    devices = MediaDevices(DevicePolicy(fallback=fallback))
    try:
        present = present_devices()
        if monitor is None:
            monitor = udev_monitor()
    except Exception as exc:  # noqa: BLE001 - pyudev raises several kinds; none must stop a call
        logger.warning("udev unavailable, camera/microphone hotplug is off: %s", exc)
        present = []
    await devices.start(present)
    if monitor is not None:
        devices.watch(monitor)
    return DeviceMedia(encoder, h264, loss_recovery, devices)
