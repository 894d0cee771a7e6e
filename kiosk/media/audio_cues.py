"""The ring, the reminder chime and the caller announced aloud, through the speaker's output.

For the citizen's screen: :meth:`CuePlayer.play_ring` when a call rings (the
ring grows louder ring by ring, and between rings a Danish voice says who
calls, for those who cannot read the screen), :meth:`CuePlayer.play_chime`
before a planned visit, :meth:`CuePlayer.stop` when answered or over. They
return at once; the sound plays in an asyncio task.

The sounds are made by Debian's own tools, on the unit, into memory: ``sox``
synthesises the tones and ``espeak-ng`` speaks (the text goes to its stdin, is
never logged, and nothing is sent anywhere). They play through the same
:class:`~kiosk.media.audio.AudioOutput` as the caller's voice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from .audio import AudioError, AudioOutput, Player, find_output, pcm_bytes
from .sources import AUDIO_RATE

log = logging.getLogger(__name__)

#: The ring grows louder over the first rings, then stays at the last step (dB full scale).
RING_LEVELS_DB = (-24.0, -18.0, -12.0, -6.0)
RING_HZ = 425  # the pitch of the Danish telephone's ringing tone
RING_SECONDS = 1.0
PAUSE_SECONDS = 0.7  # after a ring, and after the announcement
#: A call rings for at most a minute (CallRing.ring_timeout); never ring on forever if nobody stops us.
MAX_RINGS = 30
CHIME_NOTES = ((659, 0.6), (523, 1.0))  # E5 then C5: "ding-dong", each struck and fading like a bell
CHIME_DB = -12.0
SPEECH_DB = -6.0  # as loud as the ring's top
SPEECH_WORDS_PER_MINUTE = 140  # slower than espeak-ng's 175: many citizens hear poorly
MAX_TEXT_CHARS = 200
TOOL_TIMEOUT = 20.0

Language = Literal["da", "en"]
ANNOUNCEMENTS: dict[Language, tuple[str, str]] = {
    # (with a role, without)
    "da": ("{name} fra {role} ringer", "{name} ringer"),
    "en": ("{name} from {role} is calling", "{name} is calling"),
}

#: sox's output: raw PCM as the speaker takes it (s16le stereo 48 kHz).
RAW_PCM = ["-t", "raw", "-r", str(AUDIO_RATE), "-c", "2", "-e", "signed-integer", "-b", "16", "-L", "-"]


def announcement(caller_name: str, role: str, language: Language = "da") -> str:
    """What is said between rings: "Anne fra hjemmeplejen ringer"."""
    with_role, without = ANNOUNCEMENTS[language]
    name, role = " ".join(caller_name.split()), " ".join(role.split())
    text = with_role.format(name=name, role=role) if role else without.format(name=name)
    return text[:MAX_TEXT_CHARS]


async def run_tool(command: list[str], stdin: bytes | None = None) -> bytes:
    """Run a sound tool, return its stdout. Raises :class:`AudioError` saying what failed."""
    try:
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise AudioError(f"cannot run {command[0]}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), TOOL_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AudioError(f"{command[0]} took longer than {TOOL_TIMEOUT:.0f} s") from None
    finally:
        if process.returncode is None:  # cancelled: leave no process behind
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise AudioError(f"{command[0]} failed ({process.returncode}): {err.decode(errors='replace').strip()}")
    return out


async def tone(*synth: str, gain_db: float) -> bytes:
    """``sox -n`` synthesising ``synth`` (sox's own words), at ``gain_db`` below full scale."""
    return await run_tool(["sox", "-n", *RAW_PCM, "synth", *synth, "gain", "-n", f"{gain_db}"])


async def ring_tone(gain_db: float) -> bytes:
    """One ring: the Danish ringing pitch with its octave, soft edges."""
    return await tone(f"{RING_SECONDS}", "sine", str(RING_HZ), "sine", str(2 * RING_HZ), "remix", "1,2", "1,2",
                      "fade", "h", "0.05", f"{RING_SECONDS}", "0.05", gain_db=gain_db)


async def chime() -> bytes:
    notes = [await tone(f"{seconds}", "sine", str(hz), "fade", "q", "0.01", f"{seconds}", f"{seconds - 0.01}",
                        gain_db=CHIME_DB) for hz, seconds in CHIME_NOTES]
    return b"".join(notes)


async def speech(text: str, language: Language = "da") -> bytes:
    """``text`` spoken by espeak-ng's voice for ``language``, as speaker PCM."""
    wav = await run_tool(["espeak-ng", "-v", language, "-s", str(SPEECH_WORDS_PER_MINUTE), "--stdout"],
                         stdin=text.encode())
    return await run_tool(["sox", "-t", "wav", "-", *RAW_PCM, "gain", "-n", f"{SPEECH_DB}"], stdin=wav)


def silence(seconds: float) -> bytes:
    return bytes(pcm_bytes(seconds * 1000))


@dataclass
class RingReport:
    """What became of one ring's sound, as far as this unit can know: ``sounded`` once the speaker's
    player took a ring (or was playing one when stopped); ``problem`` why it could not play."""

    sounded: bool = False
    problem: str | None = None


class CuePlayer:
    """Plays one cue at a time (a new one replaces the old) on ``output``, or on
    what :func:`~kiosk.media.audio.find_output` finds when the cue starts."""

    def __init__(self, output: AudioOutput | None = None, *, language: Language = "da",
                 announce: bool = True) -> None:
        self.output = output
        self.language = language
        self.announce = announce
        self._task: asyncio.Task[None] | None = None
        self._rings: dict[float, bytes] = {}
        self._chime: bytes | None = None

    @property
    def playing(self) -> bool:
        return self._task is not None and not self._task.done()

    def play_ring(self, caller_name: str, role: str) -> asyncio.Task[None]:
        """Ring (louder ring by ring, the caller announced between rings) until :meth:`stop`."""
        return self.play_ring_saying(announcement(caller_name, role, self.language))

    def play_ring_saying(self, text: str, report: RingReport | None = None) -> asyncio.Task[None]:
        """Ring as for a call, ``text`` said between rings, until :meth:`stop`; ``report`` follows its sound."""
        report = report or RingReport()
        return self._play(self._ring(text[:MAX_TEXT_CHARS] if self.announce else None, report), report)

    def play_chime(self) -> asyncio.Task[None]:
        """The soft reminder chime, once."""
        return self._play(self._chime_once())

    def stop(self) -> None:
        """Silence now (the player process is ended by the cue's task)."""
        if self._task is not None:
            self._task.cancel()

    async def wait(self) -> None:
        """Until the current cue has ended (after :meth:`stop`: until its player is gone)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def _play(self, cue: Coroutine[Any, Any, None], report: RingReport | None = None) -> asyncio.Task[None]:
        self.stop()
        previous = self._task

        async def after_previous() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await cue
            except AudioError as exc:  # a cue that cannot sound must not break the screen
                log.warning("a sound cue could not play: %s", exc)
                if report is not None:
                    report.problem = str(exc)

        self._task = asyncio.ensure_future(after_previous())
        return self._task

    async def _player(self, stream: str) -> Player:
        output = self.output or await find_output()
        return await Player(output.player_command(stream)).start()

    async def _ring(self, text: str | None, report: RingReport) -> None:
        spoken = asyncio.ensure_future(speech(text, self.language)) if text else None
        words: bytes | None = None  # made while the first ring plays
        player: Player | None = None
        try:
            player = await self._player("ring")
            for ring in range(MAX_RINGS):
                level = RING_LEVELS_DB[min(ring, len(RING_LEVELS_DB) - 1)]
                if level not in self._rings:
                    self._rings[level] = await ring_tone(level)
                await player.play(self._rings[level] + silence(PAUSE_SECONDS))
                report.sounded = True
                if words is None and spoken is not None:
                    words = await self._spoken(spoken)
                if words:
                    await player.play(words + silence(PAUSE_SECONDS))
            await player.finish()
        finally:
            if spoken is not None:
                spoken.cancel()
                await asyncio.gather(spoken, return_exceptions=True)
            if player is not None:
                report.sounded = report.sounded or player.alive  # stopped while its first ring played
                await player.close()

    @staticmethod
    async def _spoken(spoken: asyncio.Future[bytes]) -> bytes:
        """The announcement, or nothing if it could not be made (the ring goes on)."""
        try:
            return await spoken
        except AudioError as exc:
            log.warning("the caller could not be announced: %s", exc)
            return b""

    async def _chime_once(self) -> None:
        if self._chime is None:
            self._chime = await chime()
        player = await self._player("chime")
        try:
            await player.play(self._chime)
            await player.finish()
        finally:
            await player.close()

