"""What makes a look at the screen acceptable: the picture's checks and the answer's rules.

One set of rules for the agent (judging its screen's reply before it signs it) and the
server (judging the unit's signed result before it keeps it): a picture is a PNG no
larger than :data:`~kiosk.protocol.messages.MAX_SCREENSHOT_PNG_BYTES`, with sides of at
most :data:`~kiosk.protocol.messages.MAX_SCREENSHOT_SIDE` pixels, that decodes whole;
it comes only with a yes, or from a unit nobody lives with.
"""

from __future__ import annotations

from typing import Any

from kiosk.protocol import messages as m
from kiosk.protocol import png
from kiosk.protocol.errors import ProtocolError

__all__ = ["PNG_SIGNATURE", "check_png", "judge_reply", "read_result", "shows_picture"]

PNG_SIGNATURE = png.SIGNATURE


def shows_picture(answer: m.LookAnswer) -> bool:
    """Whether this answer lets the picture go: a yes, or nobody to ask."""
    return answer in ("yes", "unassigned")


def check_png(data: bytes) -> tuple[int, int]:
    """The width and height of a picture of the screen; :class:`ProtocolError` saying what is wrong."""
    return png.check(data, m.MAX_SCREENSHOT_PNG_BYTES, m.MAX_SCREENSHOT_SIDE)


def judge_reply(reply: m.ScreenshotReply, asked_consent: bool) -> m.ScreenshotTaken:
    """The result the agent signs from its screen's reply; :class:`ProtocolError` if the reply
    breaks the rules (a picture without a yes, an answer that does not fit the question)."""
    if reply.error is not None:
        raise ProtocolError("no-picture", reply.error)
    if asked_consent == (reply.answer == "unassigned"):
        expected = "yes, no or no-answer" if asked_consent else "unassigned"
        raise ProtocolError("invalid", f"the screen answered {reply.answer!r} where {expected} was asked for")
    return _taken(reply.answer, reply.png)


def read_result(detail: dict[str, Any]) -> m.ScreenshotTaken:
    """A ``screenshot`` result's detail, held to the rules the agent holds its screen's reply to."""
    stated: m.ScreenshotTaken = m.convert(detail, m.ScreenshotTaken, strict=False)
    if _taken(stated.answer, stated.png) != stated:
        raise ProtocolError("invalid", "the picture's size is not the size the result states")
    return stated


def _taken(answer: m.LookAnswer, png: bytes | None) -> m.ScreenshotTaken:
    """The answer with its picture, if the answer lets one go (and then it must be there and sound)."""
    if not shows_picture(answer):
        if png is not None:
            raise ProtocolError("invalid", f"a picture came with the answer {answer!r}")
        return m.ScreenshotTaken(answer=answer)
    if png is None:
        raise ProtocolError("invalid", f"no picture came with the answer {answer!r}")
    width, height = check_png(png)
    return m.ScreenshotTaken(answer=answer, png=png, width=width, height=height)
