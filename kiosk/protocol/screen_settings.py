"""The one definition of the screen's settings: their names, types, ranges and defaults.

Staff change them with the signed ``set-config`` command. The server checks the change
here before it signs it; the agent checks it here again, merges it into what the unit has
and writes the result as ``ui.json`` in its state directory (atomically); the screen reads
``ui.json`` here at start and again whenever the agent says its state changed. A wipe
removes ``ui.json``: the defaults below return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

from kiosk.protocol.errors import ProtocolError

__all__ = ["CHANGE_SCHEMA", "UI_FILE", "VOLUME_STEPS", "ScreenSettings", "decode", "encode", "from_text", "merged"]

#: The file in the agent's state directory that holds them, for the screen.
UI_FILE: Final = "ui.json"
#: The screen's volume buttons step through 0..VOLUME_STEPS (the speaker spans 30 dB over them).
VOLUME_STEPS: Final = 10

Language = Literal["da", "en"]
Hour = Annotated[int, msgspec.Meta(ge=0, le=23)]
Volume = Annotated[int, msgspec.Meta(ge=0, le=VOLUME_STEPS)]
#: evdev key names, e.g. KEY_ENTER or BTN_0 (the screen ignores, with a warning, names its kernel lacks).
KeyNames = Annotated[tuple[Annotated[str, msgspec.Meta(pattern=r"^(KEY|BTN)_[A-Z0-9_]{1,30}$")], ...],
                     msgspec.Meta(max_length=8)]


class ScreenSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    language: Language = "da"
    font_scale: Annotated[float, msgspec.Meta(ge=0.75, le=2.0)] = 1.0
    night_start_hour: Hour = 22  # the display sleeps from here ...
    night_end_hour: Hour = 7  # ... to here (local time), waking only for a call
    reminder_minutes: Annotated[int, msgspec.Meta(ge=0, le=120)] = 5  # 0: no reminders
    #: The staff setup's PIN; None: no PIN set, and the setup cannot be opened.
    staff_pin: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4,12}$")] | None = None
    volume: Volume = 6  # the call's sound, and the ring's
    answer_keys: KeyNames = ()  # physical answer buttons; () the defaults
    hang_up_keys: KeyNames = ()


def _change_schema() -> dict[str, Any]:
    (definition,) = msgspec.json.schema(ScreenSettings)["$defs"].values()
    # propertyNames, not additionalProperties: msgspec keeps the dict's own additionalProperties
    return {"properties": definition["properties"], "propertyNames": {"enum": list(definition["properties"])}}


#: A change, as JSON Schema: any of the settings above, within their ranges, and nothing else
#: (``set-config``'s OpenAPI document says exactly what :func:`merged` accepts).
CHANGE_SCHEMA: Final = _change_schema()


def merged(current: ScreenSettings, changes: Mapping[str, Any]) -> ScreenSettings:
    """``current`` with ``changes`` applied, or :class:`ProtocolError` naming the key at fault."""
    _known(changes)
    try:
        return msgspec.convert({**msgspec.to_builtins(current), **changes}, ScreenSettings)
    except msgspec.ValidationError as exc:
        raise ProtocolError("invalid", f"setting refused: {exc}") from None


#: The settings that hold a list (of key names): comma separated when typed.
LIST_SETTINGS: Final = ("answer_keys", "hang_up_keys")


def from_text(pairs: Mapping[str, str]) -> dict[str, Any]:
    """Typed changes from typed text (``kiosk-server command send … set-config --arg volume=4``):
    each value read as its setting's type ("0123" stays a PIN, "4" becomes a volume)."""
    _known(pairs)
    raw = {k: [p.strip() for p in v.split(",") if p.strip()] if k in LIST_SETTINGS else v for k, v in pairs.items()}
    try:
        typed = msgspec.convert({**msgspec.to_builtins(ScreenSettings()), **raw}, ScreenSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise ProtocolError("invalid", f"setting refused: {exc}") from None
    whole = msgspec.structs.asdict(typed)
    return {k: list(whole[k]) if k in LIST_SETTINGS else whole[k] for k in pairs}


def _known(changes: Mapping[str, Any]) -> None:
    unknown = sorted(set(changes) - set(ScreenSettings.__struct_fields__))
    if unknown:
        raise ProtocolError("invalid", f"unknown setting {unknown[0]!r}; known: "
                                       f"{', '.join(ScreenSettings.__struct_fields__)}")


def decode(data: bytes) -> ScreenSettings:
    """``ui.json``'s bytes, or :class:`ProtocolError` saying what is wrong (as :func:`merged` does)."""
    try:
        raw = msgspec.json.decode(data, type=dict[str, Any])
    except msgspec.ValidationError:
        raise ProtocolError("invalid", "the settings are not a JSON object") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("malformed", f"not valid JSON: {exc}") from None
    return merged(ScreenSettings(), raw)


def encode(settings: ScreenSettings) -> bytes:
    """What ``ui.json`` holds: only what differs from the defaults (so a default changed in a
    later version reaches units whose staff never set it)."""
    defaults = ScreenSettings()
    return msgspec.json.encode({k: v for k, v in msgspec.structs.asdict(settings).items()
                                if v != getattr(defaults, k)})
