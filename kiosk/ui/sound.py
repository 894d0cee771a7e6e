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

import logging

from kiosk.media.audio import VOLUME_MAX_DB, VOLUME_MIN_DB, SpeakerSink
from kiosk.media.audio_cues import CuePlayer
from kiosk.protocol import messages as m
from kiosk.ui import controller as ui
from kiosk.ui.i18n import role_words
from kiosk.ui.session import Effects

log = logging.getLogger("kiosk.ui.sound")


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

    def chime(self) -> None:
        self.cues.play_chime()

    def effects(self, base: Effects) -> Effects:
        return Effects(set_volume=self.set_volume, chime=self.chime, consent=base.consent, ring=self.ring)
