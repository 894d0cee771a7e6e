"""The ring, the chime and the spoken caller, measured from a real PipeWire speaker's monitor."""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
from pathlib import Path

import numpy as np
import pytest

from kiosk.media.audio import AudioOutput
from kiosk.media.audio_cues import (
    PAUSE_SECONDS,
    RING_HZ,
    CuePlayer,
    RingReport,
    announcement,
    speech,
)
from tests.pipewire_fixture import (
    RATE,
    WINDOW,
    PipeWire,
    band_level_db,
    dominant_frequency,
    level_db,
    windows,
)


def segments(flags: list[bool]) -> list[tuple[int, int]]:
    """(first, end) window indexes of each run of True."""
    runs, index = [], 0
    for flag, run in itertools.groupby(flags):
        length = len(list(run))
        if flag:
            runs.append((index, index + length))
        index += length
    return runs


def is_ring(window: np.ndarray) -> bool:
    """The ring's pitch sounds and holds about half the power (its octave the rest); speech never does."""
    pitch = band_level_db(window, RING_HZ - 40, RING_HZ + 40)
    return pitch > -60 and pitch > level_db(window) - 4.5


def rings_in(samples: np.ndarray) -> list[tuple[int, int]]:
    """(first, end) windows of each ring in ``samples`` (a fifth of a second at least).

    A gap shorter than the pause between rings is a late player on a loaded
    machine, not the end of a ring: the two parts are one ring.
    """
    rings: list[tuple[int, int]] = []
    for first, end in segments([is_ring(w) for w in windows(samples)]):
        if rings and (first - rings[-1][1]) * WINDOW < PAUSE_SECONDS / 2:
            first = rings.pop()[0]
        rings.append((first, end))
    return [(a, b) for a, b in rings if b - a >= 4]


def ring_bursts(samples: np.ndarray) -> list[float]:
    """The level (dB) of each ring in ``samples``."""
    parts = windows(samples)
    return [float(np.median([level_db(w) for w in parts[a:b] if is_ring(w)])) for a, b in rings_in(samples)]


async def record(pipewire: PipeWire, device: str, seconds: float) -> np.ndarray:
    return await asyncio.to_thread(pipewire.record, device, seconds)


async def ring_heard(pipewire: PipeWire, cues: CuePlayer, seconds: float) -> np.ndarray:
    """A ring started on a fresh speaker, and ``seconds`` of what the speaker played; still ringing."""
    pipewire.add_speaker("speaker")
    recording = asyncio.ensure_future(record(pipewire, "speaker.monitor", seconds))
    await asyncio.sleep(0.3)  # parec is listening
    cues.play_ring("Anne", "hjemmeplejen")
    return await recording


def test_the_announcement_says_who_calls() -> None:
    assert announcement("Anne", "hjemmeplejen") == "Anne fra hjemmeplejen ringer"
    assert announcement("  Anne \n Hansen ", "") == "Anne Hansen ringer"
    assert announcement("Anne", "hjemmeplejen", "en") == "Anne from hjemmeplejen is calling"
    assert len(announcement("A" * 500, "B" * 500)) == 200


@pytest.mark.slow
async def test_the_announcement_is_danish_speech_of_sensible_length() -> None:
    pcm = await speech(announcement("Anne", "hjemmeplejen"))
    left = np.frombuffer(pcm, dtype="<i2")[0::2].astype(np.float64) / 32768
    seconds = len(left) / RATE
    assert 1.0 < seconds < 4.0, f"{seconds:.1f} s for five words"
    assert band_level_db(left, 100, 4000) > level_db(left) - 1  # the energy is in the voice's band
    voiced = [level_db(w) > -40 for w in windows(left)]
    assert sum(voiced) / len(voiced) > 0.4  # speech, not a blip and silence
    english = await speech(announcement("Anne", "hjemmeplejen", "en"), "en")
    assert english != pcm  # another voice and words


@pytest.mark.slow
async def test_the_ring_grows_louder_and_stops_at_once(pipewire: PipeWire) -> None:
    cues = CuePlayer(announce=False)
    samples = await ring_heard(pipewire, cues, 8.0)
    assert cues.playing
    cues.stop()
    await cues.wait()
    assert not cues.playing
    after = await record(pipewire, "speaker.monitor", 0.5)

    levels = ring_bursts(samples)
    assert len(levels) >= 3, f"rings heard: {levels}"
    steps = np.diff(levels[:4])
    assert all(step == pytest.approx(6.0, abs=1.5) for step in steps), f"ring levels {levels}"
    burst = samples[np.argmax(np.abs(samples)) - RATE // 10:][: RATE // 5]
    assert dominant_frequency(burst) in (pytest.approx(RING_HZ, abs=5), pytest.approx(2 * RING_HZ, abs=5))
    # The echo canceller may still hand on the few milliseconds it held; nothing more.
    assert np.count_nonzero(np.abs(after) > 1e-3) < 0.02 * RATE, f"{level_db(after):.1f} dB after stop"


@pytest.mark.slow
async def test_the_caller_is_announced_between_rings(pipewire: PipeWire) -> None:
    cues = CuePlayer()
    samples = await ring_heard(pipewire, cues, 7.0)
    cues.stop()
    await cues.wait()

    rings = rings_in(samples)
    assert len(rings) >= 2, f"rings at windows {rings}"
    between = windows(samples)[rings[0][1]:rings[1][0]]
    spoken = sum(level_db(w) > -50 for w in between) * WINDOW
    assert spoken > 0.8, f"only {spoken:.2f} s of speech between the first two rings"


@pytest.mark.slow
async def test_the_reminder_chime_plays_once(pipewire: PipeWire) -> None:
    pipewire.add_speaker("speaker")
    cues = CuePlayer()
    recording = asyncio.ensure_future(record(pipewire, "speaker.monitor", 5.0))
    await asyncio.sleep(0.3)
    task = cues.play_chime()
    await asyncio.wait_for(task, 20)  # it ends by itself
    samples = await recording
    # Each loud window is the "ding" or the "dong" by its pitch (not by its time:
    # a loaded machine can leave gaps, and a stale few milliseconds of an earlier cue may come first).
    loud = [w for w in windows(samples) if level_db(w) > -40]
    ding = [i for i, w in enumerate(loud) if dominant_frequency(w) == pytest.approx(659, abs=20)]
    dong = [i for i, w in enumerate(loud) if dominant_frequency(w) == pytest.approx(523, abs=20)]
    assert len(ding) >= 4 and len(dong) >= 6, f"{len(ding)} ding and {len(dong)} dong windows"
    # ding, then dong: judged by the middle of each note, since a stale window of an
    # earlier cue can stand at the very start of the recording
    assert statistics.median(ding) < statistics.median(dong) and ding[-1] < dong[-1]
    assert dominant_frequency(np.concatenate([loud[i] for i in ding])) == pytest.approx(659, abs=6)
    assert dominant_frequency(np.concatenate([loud[i] for i in dong])) == pytest.approx(523, abs=6)


@pytest.mark.slow
async def test_a_broken_voice_still_rings(pipewire: PipeWire, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """espeak-ng failing (a broken install) costs the announcement, never the ring."""
    broken = tmp_path / "bin"
    broken.mkdir()
    (broken / "espeak-ng").write_text("#!/bin/sh\necho 'espeak-ng: no voice' >&2\nexit 1\n")
    (broken / "espeak-ng").chmod(0o755)
    monkeypatch.setenv("PATH", f"{broken}:{os.environ['PATH']}")
    cues = CuePlayer()
    samples = await ring_heard(pipewire, cues, 4.0)
    cues.stop()
    await cues.wait()
    assert len(ring_bursts(samples)) >= 2


async def test_a_ring_that_cannot_sound_says_why() -> None:
    """Support's test ring reports what became of its sound: a sound card that is not there is no "played"."""
    cues = CuePlayer(AudioOutput("alsa", "no-such-card"), announce=False)
    report = RingReport()
    await asyncio.wait_for(cues.play_ring_saying("Prøveopkald fra support", report), 30)  # it gives up by itself
    assert report.sounded is False and report.problem is not None and "aplay" in report.problem, report
