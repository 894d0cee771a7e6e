"""The unit's speaker and echo-cancelled microphone: PipeWire, or ALSA where PipeWire is absent.

PipeWire does the hard parts, configured by the drop-in ``audio_echo_cancel.conf``
(installed as ``/etc/pipewire/pipewire.conf.d/kiosk-echo-cancel.conf``): its
echo-cancel module with the WebRTC canceller puts a virtual sink
(:data:`ECHO_CANCEL_SINK`) and source (:data:`ECHO_CANCEL_SOURCE`) between us
and the real devices, and WirePlumber links them to whatever speaker and
microphone exist. A USB speaker unplugged mid-call is therefore followed by
PipeWire itself (the default node changes, the canceller's streams move); what
is left to us is streaming PCM and restarting a stream whose process died.
WirePlumber must not suspend idle devices (``audio_no_suspend.lua`` for 0.4,
``audio_no_suspend_wp05.conf`` for 0.5: they say why).

Streams are Debian's own PulseAudio tools talking to ``pipewire-pulse``:
``pacat`` plays raw PCM from its stdin, ``parec`` records to its stdout. (The
PyAV wheel has no pulse device, and ``pw-cat`` 0.3.65 reads only files with a
header.) Without a PipeWire server, ``aplay`` plays to ALSA's default device and
the microphone is PyAV's ALSA capture (:func:`kiosk.media.sources.microphone_spec`).

All PCM here is what aiortc sends and Opus decodes: signed 16-bit little
endian, stereo, 48 kHz, 20 ms frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import av
import av.filter
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .sources import AUDIO_RATE, AUDIO_SAMPLES, AUDIO_TIME_BASE, microphone_spec, open_source

log = logging.getLogger(__name__)

#: The echo canceller's virtual nodes, named in ``audio_echo_cancel.conf``.
ECHO_CANCEL_SINK = "kiosk-echo-cancel-sink"
ECHO_CANCEL_SOURCE = "kiosk-echo-cancel-source"

CHANNELS = 2
BYTES_PER_SAMPLE = 2 * CHANNELS  # s16 stereo, interleaved
FRAME_BYTES = AUDIO_SAMPLES * BYTES_PER_SAMPLE  # one 20 ms frame

#: What the player buffers (PipeWire's share of the delay to the speaker).
PLAYBACK_LATENCY_MS = 40
#: Audio waiting for a player that fell behind (or is starting) beyond this is
#: dropped: a live voice must never build up delay.
MAX_QUEUED_MS = 100
#: A player that died is started again at most this often (no fork storm when
#: the sound server is gone).
RESTART_PAUSE = 1.0
#: Microphone audio waiting to be sent beyond this many 20 ms frames is dropped, oldest first.
MIC_QUEUE_FRAMES = 5
#: A player with nothing to play for this long is ended (the call is over, or its
#: audio stopped): the canceller rests, and no process outlives a call whose
#: sink nobody closed. The next frame starts a new one.
IDLE_RELEASE = 3.0
#: ``pactl`` answers in milliseconds; a server that does not is as good as absent.
PACTL_TIMEOUT = 5.0

#: The citizen's volume: a 30 dB range in 3 dB steps, 0 dB is the stream as received.
VOLUME_MIN_DB = -24.0
VOLUME_MAX_DB = 6.0
VOLUME_STEP_DB = 3.0

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_BYTES = 4096  # the smallest pipe Linux gives: ~21 ms of PCM, not 340 ms


def pcm_bytes(milliseconds: float) -> int:
    """Bytes of PCM lasting ``milliseconds`` (whole samples)."""
    return int(AUDIO_RATE * milliseconds / 1000) * BYTES_PER_SAMPLE


class AudioError(Exception):
    """A sound tool failed; the message says which and why."""


# --- where sound goes ----------------------------------------------------------


@dataclass(frozen=True)
class AudioOutput:
    """Where the unit's sound goes: a PipeWire sink (by name; ``None`` is the
    default sink) or, without PipeWire, an ALSA PCM (``None`` is ``default``)."""

    backend: Literal["pipewire", "alsa"]
    device: str | None = None

    def player_command(self, stream: str, latency_ms: int = PLAYBACK_LATENCY_MS) -> list[str]:
        """A process that plays raw PCM from its stdin; ``stream`` names it (for ``pactl``)."""
        if self.backend == "pipewire":
            command = ["pacat", "--playback", "--raw", "--format=s16le", f"--rate={AUDIO_RATE}",
                       f"--channels={CHANNELS}", f"--latency-msec={latency_ms}",
                       "--client-name=kiosk", f"--stream-name={stream}"]
            return [*command, f"--device={self.device}"] if self.device else command
        return ["aplay", "-q", "-t", "raw", "-f", "S16_LE", "-r", str(AUDIO_RATE), "-c", str(CHANNELS),
                "-D", self.device or "default", f"--buffer-time={latency_ms * 1000}"]


async def pulse_names(kind: Literal["sinks", "sources"]) -> list[str] | None:
    """The names of PipeWire's sinks or sources, or ``None`` when no server answers."""
    try:
        process = await asyncio.create_subprocess_exec(
            "pactl", "list", "short", kind,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    except FileNotFoundError:
        return None
    try:
        out, _ = await asyncio.wait_for(process.communicate(), PACTL_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    if process.returncode != 0:
        return None
    return [fields[1] for line in out.decode().splitlines() if len(fields := line.split("\t")) > 1]


async def find_output() -> AudioOutput:
    """The echo canceller's sink when PipeWire runs it, else PipeWire's default sink, else ALSA."""
    sinks = await pulse_names("sinks")
    if sinks is None:
        log.info("no PipeWire (pulse) server answers: sound goes to ALSA directly")
        return AudioOutput("alsa")
    if ECHO_CANCEL_SINK not in sinks:
        log.warning("PipeWire runs without the echo canceller (%s missing)", ECHO_CANCEL_SINK)
        return AudioOutput("pipewire")
    return AudioOutput("pipewire", ECHO_CANCEL_SINK)


# --- one playback stream -------------------------------------------------------


class Player:
    """One playback stream: PCM written to a player process without blocking the event loop."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        process = self._process
        return (process is not None and process.returncode is None and process.stdin is not None
                and not process.stdin.is_closing())

    @property
    def queued(self) -> int:
        """Bytes written but not yet taken by the player process."""
        if not self.alive:
            return 0
        assert self._process is not None and self._process.stdin is not None
        return self._process.stdin.transport.get_write_buffer_size()

    async def start(self) -> Player:
        """Start the player process. Raises :class:`AudioError` if it cannot be run."""
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        except OSError as exc:
            raise AudioError(f"cannot run {self.command[0]}: {exc}") from exc
        assert self._process.stdin is not None
        pipe = self._process.stdin.transport.get_extra_info("pipe")
        with contextlib.suppress(OSError):  # only a smaller buffer, not needed to work
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
        return self

    def write(self, pcm: bytes, limit: int | None = None) -> bool:
        """Queue ``pcm``; ``False`` (and nothing queued) if the player is gone or
        already holds more than ``limit`` bytes unplayed."""
        if not self.alive or (limit is not None and self.queued + len(pcm) > limit):
            return False
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(pcm)
        return True

    async def play(self, pcm: bytes) -> None:
        """Queue ``pcm`` and wait until the player takes it (this paces a cue to real time)."""
        if not self.write(pcm):
            raise AudioError(f"{self.command[0]} is not running")
        assert self._process is not None and self._process.stdin is not None
        try:
            await self._process.stdin.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            raise AudioError(f"{self.command[0]} stopped: {exc}") from exc

    async def finish(self, timeout: float = 10.0) -> None:
        """Let the player play what it holds, then end."""
        process = self._process
        if process is None or process.stdin is None:
            return
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            await self.close()

    async def close(self) -> None:
        """Silence now: end the player process. Idempotent."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            process.kill()
        if process.stdin is not None:
            process.stdin.close()
        await process.wait()


# --- the caller's voice ---------------------------------------------------------


def clamp_volume(db: float) -> float:
    return max(VOLUME_MIN_DB, min(VOLUME_MAX_DB, db))


class _Gain:
    """The volume as an FFmpeg filter graph, also converting any frame to our PCM."""

    def __init__(self, frame: av.AudioFrame, volume_db: float) -> None:
        self.key = (frame.format.name, frame.layout.name, frame.sample_rate, volume_db)
        graph = av.filter.Graph()
        chain = [
            graph.add_abuffer(sample_rate=frame.sample_rate, format=frame.format.name,
                              layout=frame.layout.name, time_base=frame.time_base or AUDIO_TIME_BASE),
            graph.add("volume", f"volume={volume_db}dB"),
            graph.add("aformat", f"sample_fmts=s16:sample_rates={AUDIO_RATE}:channel_layouts=stereo"),
            graph.add("abuffersink"),
        ]
        for upstream, downstream in itertools.pairwise(chain):
            upstream.link_to(downstream)
        graph.configure()
        self.graph = graph

    def __call__(self, frame: av.AudioFrame) -> bytes:
        self.graph.push(frame)
        pcm = bytearray()
        while True:
            try:
                out = self.graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return bytes(pcm)
            assert isinstance(out, av.AudioFrame)
            # a plane is padded: only ``samples`` of it are sound
            pcm += bytes(out.planes[0])[: out.samples * BYTES_PER_SAMPLE]


class SpeakerSink:
    """The caller's voice to the speaker: an ``AudioSink`` for ``DeviceCall(audio_sink=...)``.

    Called on the event loop for every decoded frame; it never blocks. The
    player process starts with the first frame (on ``output``, or on what
    :func:`find_output` finds then), and again with a later frame if it died
    (the sound server restarted), at most once per :data:`RESTART_PAUSE`; it
    ends after :data:`IDLE_RELEASE` without frames. Audio that cannot be played
    within :data:`MAX_QUEUED_MS` is dropped and counted.
    """

    def __init__(
        self,
        output: AudioOutput | None = None,
        *,
        volume_db: float = 0.0,
        latency_ms: int = PLAYBACK_LATENCY_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.output = output
        self._volume_db = clamp_volume(volume_db)
        self._latency_ms = latency_ms
        self._clock = clock
        self._limit = pcm_bytes(MAX_QUEUED_MS)
        self._gain: _Gain | None = None
        self._player: Player | None = None
        self._starting: asyncio.Task[None] | None = None
        self._idle_watch: asyncio.Task[None] | None = None
        self._next_start = 0.0
        self._last_frame = 0.0
        self._waiting = bytearray()  # PCM that arrived while the player started
        self._closed = False
        self.frames_played = 0
        self.frames_dropped = 0
        self.starts = 0

    # --- volume -------------------------------------------------------------

    @property
    def volume_db(self) -> float:
        return self._volume_db

    @volume_db.setter
    def volume_db(self, db: float) -> None:
        self._volume_db = clamp_volume(db)

    def louder(self) -> float:
        self.volume_db += VOLUME_STEP_DB
        return self.volume_db

    def softer(self) -> float:
        self.volume_db -= VOLUME_STEP_DB
        return self.volume_db

    # --- frames -------------------------------------------------------------

    @property
    def player_pid(self) -> int | None:
        return self._player.pid if self._player is not None else None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the call ended); frames are ignored since."""
        return self._closed

    def __call__(self, frame: av.AudioFrame) -> None:
        if self._closed:
            return
        self._last_frame = self._clock()
        pcm = self._convert(frame)
        player = self._player
        if player is not None and player.alive:
            if player.write(pcm, self._limit):
                self.frames_played += 1
            else:
                self.frames_dropped += 1
            return
        if self._starting is None and self._clock() >= self._next_start:
            self._next_start = self._clock() + RESTART_PAUSE
            self._starting = asyncio.ensure_future(self._start())
        if self._starting is not None and len(self._waiting) + len(pcm) <= self._limit:
            self._waiting += pcm
        else:
            self.frames_dropped += 1

    def _convert(self, frame: av.AudioFrame) -> bytes:
        key = (frame.format.name, frame.layout.name, frame.sample_rate, self._volume_db)
        if self._gain is None or self._gain.key != key:
            self._gain = _Gain(frame, self._volume_db)
        return self._gain(frame)

    async def _start(self) -> None:
        try:
            if self._player is not None:
                await self._player.close()
            output = self.output or await find_output()
            player = await Player(output.player_command("caller", self._latency_ms)).start()
            if self._closed:
                await player.close()
                return
            self._player = player
            self.starts += 1
            player.write(bytes(self._waiting))
            self._idle_watch = asyncio.ensure_future(self._release_when_idle(player))
        except AudioError as exc:
            log.warning("the speaker could not be started: %s", exc)
        finally:
            self._waiting.clear()
            self._starting = None

    async def _release_when_idle(self, player: Player) -> None:
        while player.alive:
            idle = self._clock() - self._last_frame
            if idle >= IDLE_RELEASE:
                log.debug("the speaker had nothing to play for %.1f s: stream ended", idle)
                await player.close()
                return
            await asyncio.sleep(IDLE_RELEASE - idle)

    async def close(self) -> None:
        """The call ended: stop playing at once. Idempotent."""
        self._closed = True
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._idle_watch is not None:
            self._idle_watch.cancel()
            await asyncio.gather(self._idle_watch, return_exceptions=True)
        if self._player is not None:
            await self._player.close()


# --- the microphone ---------------------------------------------------------------


class PipeWireMicrophone(MediaStreamTrack):
    """An aiortc audio track read from a PipeWire source (the echo canceller's) by ``parec``.

    The source is virtual and stays while microphones come and go: WirePlumber
    relinks the canceller to whichever microphone is there. If ``parec`` ends
    (the sound server went away) the track ends, as a camera's does when unplugged.

    ``parec`` is read all the time and only the newest :data:`MIC_QUEUE_FRAMES`
    are kept: the sound server would otherwise hold everything recorded while
    nobody read (the seconds a call takes to connect) and the caller would hear
    the citizen that much late for the whole call.
    """

    kind = "audio"

    def __init__(self, device: str | None = ECHO_CANCEL_SOURCE, latency_ms: int = 20) -> None:
        super().__init__()
        self.device = device
        self.command = ["parec", "--raw", "--format=s16le", f"--rate={AUDIO_RATE}", f"--channels={CHANNELS}",
                        f"--latency-msec={latency_ms}", "--client-name=kiosk", "--stream-name=microphone"]
        if device:
            self.command.append(f"--device={device}")
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._samples = 0
        self.frames_dropped = 0

    async def start(self) -> PipeWireMicrophone:
        """Start recording. Raises :class:`AudioError` if ``parec`` cannot be run."""
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        except OSError as exc:
            raise AudioError(f"cannot run parec: {exc}") from exc
        self._reader = asyncio.ensure_future(self._read(self._process))
        return self

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            while True:
                pcm = await process.stdout.readexactly(FRAME_BYTES)
                while self._queue.qsize() >= MIC_QUEUE_FRAMES:
                    self._queue.get_nowait()
                    self.frames_dropped += 1
                self._queue.put_nowait(pcm)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._queue.put_nowait(None)  # the end, for recv

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live" or self._reader is None:
            raise MediaStreamError
        pcm = await self._queue.get()
        if pcm is None:
            self.stop()
            raise MediaStreamError
        frame = av.AudioFrame(format="s16", layout="stereo", samples=AUDIO_SAMPLES)
        frame.planes[0].update(pcm)
        frame.sample_rate = AUDIO_RATE
        frame.time_base = AUDIO_TIME_BASE
        frame.pts = self._samples
        self._samples += AUDIO_SAMPLES
        return frame

    def stop(self) -> None:
        super().stop()
        process = self._process
        if process is not None and process.returncode is None:
            process.kill()  # asyncio reaps it; the reader sees the end of its output

    async def stopped(self) -> None:
        """After :meth:`stop`: until ``parec`` is gone and its output read to the end."""
        if self._process is not None:
            await self._process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


async def open_microphone() -> MediaStreamTrack:
    """The echo-cancelled microphone when PipeWire runs the canceller; PipeWire's
    default source without it; ALSA's default microphone without PipeWire."""
    sources = await pulse_names("sources")
    if sources is None:
        return await open_source(microphone_spec())
    return await pipewire_microphone(sources)


async def pipewire_microphone(sources: list[str]) -> PipeWireMicrophone:
    """Recording from the echo canceller's source if it is among PipeWire's
    ``sources`` (:func:`pulse_names`), else from PipeWire's default source.
    Raises :class:`AudioError` if ``parec`` cannot be run."""
    if ECHO_CANCEL_SOURCE not in sources:
        log.warning("PipeWire runs without the echo canceller (%s missing)", ECHO_CANCEL_SOURCE)
        return await PipeWireMicrophone(device=None).start()
    return await PipeWireMicrophone().start()
