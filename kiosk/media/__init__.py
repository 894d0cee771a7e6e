"""Device media for the kiosk UI's WebRTC peer (aiortc + PyAV + pyudev).

Modules, one concept each:

- ``encoders``  which video encoder runs (hardware H.264 or software), and the
                 hook that plugs a PyAV H.264 encoder into aiortc
- ``encoding``  video encoded in the capture thread; aiortc's sender only packs it
- ``sources``   capture tracks: V4L2 camera, ALSA microphone, lavfi test sources
- ``swappable`` the track a call holds while its source changes
- ``hotplug``   cameras/microphones appearing and disappearing (udev)
- ``keyframes`` asking for a key frame after unrepairable loss
- ``stats``     call quality for the call record, freeze counting
- ``loopback``  two peers in one process on 127.0.0.1 (tests, bench, self-test)
- ``audio``     the speaker (the caller's voice, a volume) and the echo-cancelled
                 microphone, through PipeWire (ALSA where it is absent)
- ``audio_cues`` the ring tone, the reminder chime and the caller announced aloud
"""

from .audio import AudioOutput, PipeWireMicrophone, SpeakerSink, find_output, open_microphone
from .audio_cues import CuePlayer
from .encoders import (
    EncoderChoice,
    H264EncoderInstallation,
    PyAVH264Encoder,
    apply_encoder_choice,
    choose_video_encoder,
    install_h264_encoder,
    prefer_video_codec,
    probe_encoder,
    uninstall_h264_encoder,
)
from .hotplug import DeviceEvent, DevicePolicy, MediaDevices, present_devices, udev_monitor
from .keyframes import LossRecovery, install_loss_recovery, uninstall_loss_recovery
from .sources import (
    CaptureTrack,
    SourceSpec,
    camera_spec,
    lavfi_pattern_spec,
    lavfi_tone_spec,
    microphone_spec,
    open_source,
)
from .stats import CallQuality, FreezeCounter, MeteredTrack, measure, summarize
from .swappable import SwappableTrack

__all__ = [
    "AudioOutput",
    "CallQuality",
    "CaptureTrack",
    "CuePlayer",
    "DeviceEvent",
    "DevicePolicy",
    "EncoderChoice",
    "FreezeCounter",
    "H264EncoderInstallation",
    "LossRecovery",
    "MediaDevices",
    "MeteredTrack",
    "PipeWireMicrophone",
    "PyAVH264Encoder",
    "SourceSpec",
    "SpeakerSink",
    "SwappableTrack",
    "apply_encoder_choice",
    "camera_spec",
    "choose_video_encoder",
    "find_output",
    "install_h264_encoder",
    "install_loss_recovery",
    "lavfi_pattern_spec",
    "lavfi_tone_spec",
    "measure",
    "microphone_spec",
    "open_microphone",
    "open_source",
    "prefer_video_codec",
    "present_devices",
    "probe_encoder",
    "summarize",
    "udev_monitor",
    "uninstall_h264_encoder",
    "uninstall_loss_recovery",
]
