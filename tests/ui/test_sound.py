"""The screen's volume steps on the speaker's range, and the ring's words in the citizen's language."""

from __future__ import annotations

from kiosk.media.audio import SpeakerSink
from kiosk.media.audio_cues import announcement
from kiosk.ui import controller as ui
from kiosk.ui.i18n import role_words
from kiosk.ui.sound import Speaker, volume_db


def test_the_volume_steps_span_more_than_18_db_evenly() -> None:
    steps = [volume_db(level) for level in range(ui.VOLUME_STEPS + 1)]
    assert steps[-1] - steps[0] >= 18.0
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert volume_db(-5) == steps[0] and volume_db(99) == steps[-1]


def test_a_volume_press_reaches_the_voice_of_the_call_in_progress() -> None:
    speaker = Speaker(level=6, language="da")
    sink = speaker.new_sink()
    assert isinstance(sink, SpeakerSink) and sink.volume_db == volume_db(6)
    speaker.set_volume(9)
    assert sink.volume_db == volume_db(9)
    assert speaker.new_sink().volume_db == volume_db(9)  # the next call starts where the citizen left it


def test_the_caller_is_announced_with_the_role_in_the_citizens_language() -> None:
    assert announcement("Anne", role_words("caregiver", "da")) == "Anne fra hjemmeplejen ringer"
    assert announcement("Anne", role_words("sygeplejerske", "da")) == "Anne fra sygeplejerske ringer"
