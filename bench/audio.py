"""The speaker's latency and CPU: the caller's voice through SpeakerSink into a real PipeWire.

Run from the repository root:

    python bench/audio.py [--clicks 20] [--seconds 30]

It starts a private PipeWire (pipewire + wireplumber + pipewire-pulse with the
kiosk's echo-cancel drop-in, as the tests do: tests/pipewire_fixture.py) with a
null sink as the speaker, then for two paths — through the echo canceller's
sink (what a unit uses) and straight into the speaker — measures:

- latency to the speaker: 20 ms frames of silence are handed to the sink in
  real time, as a call delivers them; every half second one frame is a loud
  burst instead. ``parec`` records the speaker's monitor in 5 ms pieces, each
  stamped when it arrives; the latency is from handing the burst frame to the
  sink to the moment its first sample was recorded. It includes the recording
  side's own buffering, so it is an upper bound of what a listener hears.
- CPU per second of audio: the benchmark process's CPU time (the sink's
  volume filter and writes, the lavfi tone's decoding thread, its event loop), the player process's
  (``pacat``) and the PipeWire daemon's (the echo canceller runs in it), over
  ``--seconds`` of a 440 Hz tone, divided by the seconds played; and the
  event loop thread's CPU inside the sink's calls alone (``sink_cpu``). With the
  echo canceller, the microphone (``parec`` from the cancelled source) is open
  too, as in a call; that is the canceller's real load.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402

from kiosk.media.audio import (  # noqa: E402
    ECHO_CANCEL_SINK,
    PLAYBACK_LATENCY_MS,
    AudioOutput,
    PipeWireMicrophone,
    SpeakerSink,
)
from kiosk.media.sources import AUDIO_RATE, AUDIO_SAMPLES, AUDIO_TIME_BASE, lavfi_tone_spec, open_source  # noqa: E402
from tests.pipewire_fixture import PipeWire  # noqa: E402

FRAME_SECONDS = AUDIO_SAMPLES / AUDIO_RATE
CLICK_EVERY = 25  # frames: one burst every half second
THRESHOLD = 0.05  # of full scale: the burst is at 0.5, silence is 0
PIECE = 240  # samples per recorded piece (5 ms)


def frame(amplitude: float, pts: int) -> av.AudioFrame:
    """One 20 ms stereo s16 frame: a 1 kHz tone at ``amplitude`` (0 is silence)."""
    samples = bytearray()
    for i in range(AUDIO_SAMPLES):
        value = int(amplitude * 32767 * math.sin(2 * math.pi * 1000 * i / AUDIO_RATE))
        samples += value.to_bytes(2, "little", signed=True) * 2
    out = av.AudioFrame(format="s16", layout="stereo", samples=AUDIO_SAMPLES)
    out.planes[0].update(bytes(samples))
    out.sample_rate, out.time_base, out.pts = AUDIO_RATE, AUDIO_TIME_BASE, pts
    return out


class Recorder:
    """``parec`` on a monitor in a thread: when (monotonic) each sample above the threshold arrived."""

    def __init__(self, pipewire: PipeWire, device: str) -> None:
        import subprocess

        self.process = subprocess.Popen(
            ["parec", "--raw", "--format=s16le", f"--rate={AUDIO_RATE}", "--channels=1", "--latency-msec=5",
             f"--device={device}"], env={**os.environ, **pipewire.env}, stdout=subprocess.PIPE, bufsize=0)
        self.onsets: list[float] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        loud = False
        while chunk := self.process.stdout.read(PIECE * 2):
            arrived = time.monotonic()
            count = len(chunk) // 2
            for i in range(count):
                value = abs(int.from_bytes(chunk[2 * i:2 * i + 2], "little", signed=True)) / 32768
                if value > THRESHOLD and not loud:
                    # the sample was recorded (count - i) samples before the piece arrived
                    self.onsets.append(arrived - (count - i) / AUDIO_RATE)
                    loud = True
                elif value <= THRESHOLD / 10 and loud and i % 48 == 0:
                    loud = False

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self._thread.join(5)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def latency(pipewire: PipeWire, output: AudioOutput, clicks: int, latency_ms: int) -> dict[str, float]:
    silence, burst = frame(0.0, 0), frame(0.5, 0)
    sink = SpeakerSink(output, latency_ms=latency_ms)
    recorder = Recorder(pipewire, "speaker.monitor")
    sent: list[float] = []
    try:
        start = time.monotonic()
        n = 0
        while len(sent) < clicks:
            loud = n % CLICK_EVERY == CLICK_EVERY - 1 and n > 2 * CLICK_EVERY  # after a second of warm-up
            out = burst if loud else silence
            out.pts = n * AUDIO_SAMPLES
            if loud:
                sent.append(time.monotonic())
            sink(out)
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME_SECONDS - time.monotonic()))
        await asyncio.sleep(1.0)
    finally:
        recorder.stop()
        await sink.close()
    # each burst's first recorded sample after it was handed over
    delays = []
    for at in sent:
        later = [onset - at for onset in recorder.onsets if onset > at]
        if later and later[0] < 1.0:
            delays.append(later[0] * 1000)
    return {"clicks": len(sent), "heard": len(delays), "latency_p50_ms": round(statistics.median(delays), 1),
            "latency_max_ms": round(max(delays), 1), "latency_min_ms": round(min(delays), 1)}


async def cpu(output: AudioOutput, seconds: float, daemon_pid: int, latency_ms: int,
              with_microphone: bool) -> dict[str, float]:
    track = await open_source(lavfi_tone_spec(440))
    sink = SpeakerSink(output, latency_ms=latency_ms)
    microphone = await PipeWireMicrophone().start() if with_microphone else None
    mic_frames = 0

    async def listen() -> None:
        nonlocal mic_frames
        while microphone is not None:
            await microphone.recv()
            mic_frames += 1

    listening = asyncio.ensure_future(listen())
    try:
        for _ in range(50):  # one second to settle: the player started
            got = await track.recv()
            assert isinstance(got, av.AudioFrame)
            sink(got)
        assert sink.player_pid is not None
        own, player, daemon = time.process_time(), cpu_seconds(sink.player_pid), cpu_seconds(daemon_pid)
        began, in_sink = time.monotonic(), 0.0
        for _ in range(int(seconds / FRAME_SECONDS)):
            got = await track.recv()
            assert isinstance(got, av.AudioFrame)
            before = time.thread_time()
            sink(got)
            in_sink += time.thread_time() - before
        wall = time.monotonic() - began
        own, player = time.process_time() - own, cpu_seconds(sink.player_pid) - player
        daemon = cpu_seconds(daemon_pid) - daemon
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        if microphone is not None:
            microphone.stop()
        track.stop()
        await sink.close()
    return {"seconds": round(wall, 1), "dropped_frames": sink.frames_dropped,
            "microphone_frames": mic_frames,
            "sink_cpu_ms_per_s": round(1000 * in_sink / wall, 2),
            "process_cpu_ms_per_s": round(1000 * own / wall, 1),
            "pacat_cpu_ms_per_s": round(1000 * player / wall, 1),
            "pipewire_cpu_ms_per_s": round(1000 * daemon / wall, 1)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pipewire = PipeWire(Path(tempfile.mkdtemp(prefix="bench-audio-"))).start()
    os.environ.update(pipewire.env)
    try:
        pipewire.add_speaker("speaker")
        daemon = pipewire.pid("pipewire")
        results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0],
                                               "python": platform.python_version()}}
        for name, output in (("echo_cancelled", AudioOutput("pipewire", ECHO_CANCEL_SINK)),
                             ("direct", AudioOutput("pipewire", "speaker"))):
            results[name] = {
                **await latency(pipewire, output, args.clicks, args.latency_ms),
                **await cpu(output, args.seconds, daemon, args.latency_ms, with_microphone=name == "echo_cancelled"),
            }
        results["machine"]["load_1min_after"] = os.getloadavg()[0]
        return results
    finally:
        pipewire.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--latency-ms", type=int, default=PLAYBACK_LATENCY_MS, help="the player's buffer")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
