"""The speaker sink, the volume and the echo-cancelled microphone, against a real PipeWire.

Sound is measured, not assumed: what the speaker plays is recorded from its
null sink's monitor and analysed with an FFT (tests/pipewire_fixture.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import av
import numpy as np
import pytest

from kiosk.media.audio import (
    ECHO_CANCEL_SINK,
    ECHO_CANCEL_SOURCE,
    AudioOutput,
    PipeWireMicrophone,
    Player,
    SpeakerSink,
    find_output,
    open_microphone,
)
from kiosk.media.audio_cues import speech
from kiosk.media.sources import lavfi_tone_spec, open_source
from tests.media.calls import next_audio
from tests.pipewire_fixture import PipeWire, band_level_db, dominant_frequency, level_db, steady_level_db

pytestmark = pytest.mark.slow

FAR_END_HZ = 440  # the caller's "voice"
NEAR_END_HZ = 1000  # the citizen's microphone, without PipeWire
#: The citizen talking (the canceller's noise suppression takes a steady tone for noise, rightly).
CITIZEN_SAYS = "Hej Anne. Jeg har det godt i dag, og jeg har fået min medicin."


@contextlib.asynccontextmanager
async def caller_voice(sink: SpeakerSink, frequency: int = FAR_END_HZ) -> AsyncIterator[None]:
    """The caller's audio as a call delivers it: real-time 20 ms frames into ``sink``, until the block ends."""
    track = await open_source(lavfi_tone_spec(frequency))

    async def pump() -> None:
        while True:
            frame = await track.recv()
            assert isinstance(frame, av.AudioFrame)
            sink(frame)

    task = asyncio.ensure_future(pump())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        track.stop()


async def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Whether ``condition`` holds within ``seconds`` (asked every 50 ms)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.asynccontextmanager
async def citizen_speaks() -> AsyncIterator[None]:
    """The citizen talking on and on in the room: the "room" sink, which the tests' microphones hear."""
    words = await speech(CITIZEN_SAYS)
    player = await Player(AudioOutput("pipewire", "room").player_command("citizen")).start()

    async def talk() -> None:
        while True:
            await player.play(words)

    task = asyncio.ensure_future(talk())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await player.close()


def voice_level_db(samples: np.ndarray) -> float:
    return band_level_db(samples, 100, 4000)


def left(frames: list[av.AudioFrame]) -> np.ndarray:
    """The left channel of ``frames`` as float samples."""
    return np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0] for f in frames]).astype(np.float64) / 32768


async def record(pipewire: PipeWire, device: str, seconds: float) -> np.ndarray:
    return await asyncio.to_thread(pipewire.record, device, seconds)


async def tone_arrives(pipewire: PipeWire, device: str, frequency: float, attempts: int = 20) -> np.ndarray:
    """Half-second recordings of ``device`` until one holds ``frequency`` clearly; that one."""
    samples = np.zeros(0)
    for _ in range(attempts):
        samples = await record(pipewire, device, 0.5)
        if level_db(samples) > -40 and abs(dominant_frequency(samples) - frequency) < 5:
            return samples
    pytest.fail(f"{frequency} Hz never reached {device}: last {level_db(samples):.1f} dB, "
                f"{dominant_frequency(samples):.0f} Hz")


async def voice_arrives(pipewire: PipeWire, device: str, attempts: int = 20) -> np.ndarray:
    """One-second recordings of ``device`` until one holds the citizen's voice; that one."""
    samples = np.zeros(0)
    for _ in range(attempts):
        samples = await record(pipewire, device, 1.0)
        if voice_level_db(samples) > -40:
            return samples
    pytest.fail(f"the citizen's voice never reached {device}: last {voice_level_db(samples):.1f} dB")


async def test_the_canceller_is_found_and_used(pipewire: PipeWire) -> None:
    assert await find_output() == AudioOutput("pipewire", ECHO_CANCEL_SINK)


def test_wireplumber_takes_the_no_suspend_drop_in_without_error(pipewire: PipeWire) -> None:
    """(A Lua error there is only logged; the rule would silently not apply.)"""
    errors = [line for line in (pipewire.root / "wireplumber.log").read_text().splitlines()
              if "errhandler" in line or "Lua runtime error" in line]
    assert not errors, errors


async def test_the_callers_voice_plays_through_the_speaker(pipewire: PipeWire) -> None:
    pipewire.add_speaker("speaker")
    sink = SpeakerSink()
    try:
        async with caller_voice(sink):
            samples = await tone_arrives(pipewire, "speaker.monitor", FAR_END_HZ)
            assert abs(dominant_frequency(samples) - FAR_END_HZ) < 3
            assert level_db(samples) > -30
    finally:
        await sink.close()
    assert sink.frames_played > 0
    assert sink.starts == 1


async def test_volume_spans_at_least_18_db_while_playing(pipewire: PipeWire) -> None:
    pipewire.add_speaker("speaker")
    sink = SpeakerSink(volume_db=0.0)
    try:
        async with caller_voice(sink):
            await tone_arrives(pipewire, "speaker.monitor", FAR_END_HZ)
            loud = steady_level_db(await record(pipewire, "speaker.monitor", 1.0))
            for _ in range(6):
                sink.softer()
            assert sink.volume_db == -18.0
            await record(pipewire, "speaker.monitor", 0.5)  # what was queued at 0 dB plays out
            soft = steady_level_db(await record(pipewire, "speaker.monitor", 1.0))
            sink.volume_db = -100  # clamped to the range's bottom
            assert sink.volume_db < -18.0
            sink.volume_db = 100
            assert sink.volume_db > 0.0
    finally:
        await sink.close()
    assert loud - soft == pytest.approx(18.0, abs=1.5)


async def test_echo_is_cancelled_by_at_least_20_db_and_the_citizen_still_heard(pipewire: PipeWire) -> None:
    """The far end's tone goes to the speaker and is fed back into the microphone
    (a loopback: the room); the echo-cancelled source must carry it at least 20 dB
    lower than the microphone itself, while the citizen's own voice still passes."""
    pipewire.add_speaker("speaker", priority=3000)
    pipewire.add_speaker("room", priority=10)  # the citizen speaking: heard by the microphone only
    pipewire.add_microphone("mic", hears=["speaker", "room"], priority=3000)
    sink = SpeakerSink()
    try:
        async with caller_voice(sink):
            await tone_arrives(pipewire, "mic", FAR_END_HZ)
            await record(pipewire, ECHO_CANCEL_SOURCE, 3.0)  # the canceller adapts
            raw, cancelled = await asyncio.gather(record(pipewire, "mic", 2.0),
                                                  record(pipewire, ECHO_CANCEL_SOURCE, 2.0))
    finally:
        await sink.close()
    assert "mic:capture" in pipewire.links_to("echo-cancel-capture:input")
    echo, residue = band_level_db(raw, 400, 480), band_level_db(cancelled, 400, 480)
    assert echo > -30, "the loopback did not carry the far end's tone to the microphone"
    assert echo - residue >= 20, f"echo only {echo - residue:.1f} dB lower"

    async with citizen_speaks():
        await voice_arrives(pipewire, ECHO_CANCEL_SOURCE)
        spoken, sent = await asyncio.gather(record(pipewire, "mic", 2.0), record(pipewire, ECHO_CANCEL_SOURCE, 2.0))
    assert voice_level_db(sent) > voice_level_db(spoken) - 10, "the canceller swallowed the citizen"


async def test_a_speaker_unplugged_mid_call_is_followed(pipewire: PipeWire) -> None:
    pipewire.add_speaker("builtin", priority=1000)
    pipewire.add_speaker("usb", priority=2000)
    sink = SpeakerSink()
    try:
        async with caller_voice(sink):
            await tone_arrives(pipewire, "usb.monitor", FAR_END_HZ)
            pipewire.remove("usb")
            await tone_arrives(pipewire, "builtin.monitor", FAR_END_HZ)
    finally:
        await sink.close()
    assert sink.starts == 1  # PipeWire moved the stream; nothing was restarted


async def test_a_speaker_with_nothing_to_play_ends_its_stream_and_starts_again(pipewire: PipeWire) -> None:
    """The call's audio stopped and nobody closed the sink: no player lingers; audio again, sound again."""
    pipewire.add_speaker("speaker")
    sink = SpeakerSink()
    try:
        async with caller_voice(sink):
            await tone_arrives(pipewire, "speaker.monitor", FAR_END_HZ)
        pid = sink.player_pid
        assert pid is not None and running(pid)
        assert await eventually(lambda: not running(pid)), "the idle player is still running"
        async with caller_voice(sink):
            await tone_arrives(pipewire, "speaker.monitor", FAR_END_HZ)
    finally:
        await sink.close()
    assert sink.starts == 2


async def test_a_player_that_dies_is_started_again(pipewire: PipeWire) -> None:
    pipewire.add_speaker("speaker")
    sink = SpeakerSink()
    try:
        async with caller_voice(sink):
            await tone_arrives(pipewire, "speaker.monitor", FAR_END_HZ)
            first = sink.player_pid
            assert first is not None
            os.kill(first, 9)
            assert await eventually(lambda: sink.player_pid not in (None, first))
            await record(pipewire, "speaker.monitor", 0.3)
            await tone_arrives(pipewire, "speaker.monitor", FAR_END_HZ)
    finally:
        await sink.close()
    assert sink.starts == 2


async def test_without_pipewire_alsa_plays_the_voice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ALSA directly, through a PCM that writes what it plays to a file (no sound card here)."""
    played = tmp_path / "played.raw"
    (tmp_path / ".asoundrc").write_text(
        f'pcm.!default {{ type file slave.pcm "null" file "{played}" format "raw" }}\n')
    monkeypatch.setenv("HOME", str(tmp_path))
    sink = SpeakerSink(AudioOutput("alsa"))
    try:
        async with caller_voice(sink):
            assert await eventually(lambda: played.exists() and played.stat().st_size > 48000 * 4)
    finally:
        await sink.close()
    stereo = np.frombuffer(played.read_bytes()[: 48000 * 4], dtype="<i2").astype(np.float64) / 32768
    assert abs(dominant_frequency(stereo[0::2]) - FAR_END_HZ) < 3


async def test_without_pipewire_the_microphone_is_alsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No sound server answers: PyAV reads ALSA's default capture device (here a
    PCM that reads a file the test wrote: there is no sound card)."""
    heard = tmp_path / "room.raw"
    tone = await asyncio.create_subprocess_exec(
        "sox", "-n", "-t", "raw", "-r", "48000", "-c", "2", "-e", "signed", "-b", "16", "-L", str(heard),
        "synth", "3", "sine", str(NEAR_END_HZ), "gain", "-6")
    assert await tone.wait() == 0
    (tmp_path / ".asoundrc").write_text(
        f'pcm.!default {{ type file slave.pcm "null" file "/dev/null" infile "{heard}" format "raw" }}\n')
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/nobody-listens")
    monkeypatch.delenv("ALSA_CONFIG_PATH", raising=False)
    microphone = await open_microphone()
    try:
        assert not isinstance(microphone, PipeWireMicrophone)
        frames = [await next_audio(microphone) for _ in range(50)]
    finally:
        microphone.stop()
    assert all(f.samples == 960 for f in frames)
    samples = left(frames[10:])
    assert dominant_frequency(samples) == pytest.approx(NEAR_END_HZ, abs=3)
    assert level_db(samples) == pytest.approx(-9, abs=1)  # a sine at -6 dB peak


async def test_the_microphone_is_the_echo_cancelled_source(pipewire: PipeWire) -> None:
    pipewire.add_speaker("room", priority=10)
    pipewire.add_microphone("mic", hears=["room"], priority=3000)
    microphone = await open_microphone()
    assert isinstance(microphone, PipeWireMicrophone)
    try:
        assert microphone.device == ECHO_CANCEL_SOURCE
        async with citizen_speaks():
            await voice_arrives(pipewire, "mic")
            frames = [await next_audio(microphone) for _ in range(150)]  # 3 s
    finally:
        microphone.stop()
        await microphone.stopped()
    assert all(f.samples == 960 and f.sample_rate == 48000 and f.layout.name == "stereo" for f in frames)
    assert [f.pts for f in frames] == [i * 960 for i in range(150)]
    assert voice_level_db(left(frames[-100:])) > -40


async def test_a_microphone_read_late_gives_the_present_not_the_past(pipewire: PipeWire) -> None:
    """Opened at the answer, read only once the call connects: what was said
    meanwhile is dropped, so the caller does not hear the citizen late for the whole call."""
    pipewire.add_speaker("room", priority=10)
    pipewire.add_microphone("mic", hears=["room"], priority=3000)
    microphone = await PipeWireMicrophone().start()
    try:
        await asyncio.sleep(2.0)  # silence in the room; nobody reads yet
        async with citizen_speaks():
            await voice_arrives(pipewire, ECHO_CANCEL_SOURCE)
            first = [await microphone.recv() for _ in range(25)]
    finally:
        microphone.stop()
        await microphone.stopped()
    assert microphone.frames_dropped > 50  # the two quiet seconds
    assert voice_level_db(left(first)) > -40, "the first frames read were the past (silence)"


async def test_a_microphone_unplugged_mid_call_is_followed(pipewire: PipeWire) -> None:
    """The canceller's source stays; WirePlumber relinks its capture to the microphone that is left."""
    pipewire.add_speaker("room", priority=10)
    pipewire.add_microphone("webcam-mic", hears=["room"], priority=2000)
    pipewire.add_microphone("usb-mic", hears=["room"], priority=3000)
    microphone = await PipeWireMicrophone().start()
    try:
        async with citizen_speaks():
            await voice_arrives(pipewire, ECHO_CANCEL_SOURCE)
            assert "usb-mic:capture" in pipewire.links_to("echo-cancel-capture:input")
            pipewire.remove("usb-mic")
            assert await eventually(lambda: "webcam-mic:capture" in pipewire.links_to("echo-cancel-capture:input"))
            frames = [await microphone.recv() for _ in range(100)]  # 2 s after the unplug; the track lives
    finally:
        microphone.stop()
        await microphone.stopped()
    assert voice_level_db(left(frames[-50:])) > -40
