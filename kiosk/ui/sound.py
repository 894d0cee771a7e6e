"""What the citizen hears: the caller's voice, the ring with the caller announced, the chime, the volume.

:class:`Speaker` turns the controller's sound actions into
:mod:`kiosk.media.audio` and :mod:`kiosk.media.audio_cues` calls: one
:class:`~kiosk.media.audio.SpeakerSink` per call (the voice), one
:class:`~kiosk.media.audio_cues.CuePlayer` for the ring and the chime, and the
volume steps of the screen mapped onto the speaker's range (3 dB a step, 30 dB
in all). A unit without a sound server or card logs that and stays silent; the
screen works on.
"""

from __future__ import annotations

import asyncio
import logging

from kiosk.media.audio import VOLUME_MAX_DB, VOLUME_MIN_DB, SpeakerSink
from kiosk.media.audio_cues import CuePlayer, RingReport
from kiosk.protocol import messages as m
from kiosk.ui import controller as ui
from kiosk.ui.i18n import role_words, translator
from kiosk.ui.session import Effects

log = logging.getLogger("kiosk.ui.sound")

#: How long a stopped test ring may take to end its player before its sound is reported.
RING_STOP_WAIT = 5.0


def volume_db(level: int) -> float:
    """Screen volume step (0..VOLUME_STEPS) in dB of the speaker's range."""
    share = min(ui.VOLUME_STEPS, max(0, level)) / ui.VOLUME_STEPS
    return VOLUME_MIN_DB + share * (VOLUME_MAX_DB - VOLUME_MIN_DB)


class Speaker:
    def __init__(self, level: int, language: str) -> None:
        self.level = level
        self.language = language
        self.cues = CuePlayer(language="en" if language == "en" else "da")
        self.sink: SpeakerSink | None = None
        self._test: tuple[asyncio.Task[None], RingReport] | None = None  # support's last test ring

    def new_sink(self) -> SpeakerSink:
        """The voice of a new call, at the citizen's volume."""
        self.sink = SpeakerSink(volume_db=volume_db(self.level))
        return self.sink

    def set_volume(self, level: int) -> None:
        self.level = level
        if self.sink is not None:
            self.sink.volume_db = volume_db(level)

    def ring(self, ring: m.CallRing | None) -> None:
        if ring is None:
            self.cues.stop()
        else:
            self.cues.play_ring(ring.caller_name, role_words(ring.caller_role, self.language))

    def test_ring(self) -> None:
        report = RingReport()
        words = translator(self.language)("Test ring from support. Press the screen to answer.")
        self._test = self.cues.play_ring_saying(words, report), report

    async def test_ring_sound(self) -> tuple[m.RingSound, str | None]:
        """The last test ring's sound, once it has stopped: played, or failed and why."""
        if self._test is None:
            return "failed", "the screen was never asked to ring"
        task, report = self._test
        await asyncio.wait([task], timeout=RING_STOP_WAIT)
        if report.sounded:
            return "played", None
        return "failed", report.problem or "the ring stopped before its sound began"

    def chime(self) -> None:
        self.cues.play_chime()

    def effects(self, base: Effects) -> Effects:
        return Effects(set_volume=self.set_volume, chime=self.chime, consent=base.consent, ring=self.ring,
                       test_ring=self.test_ring, test_ring_sound=self.test_ring_sound)
