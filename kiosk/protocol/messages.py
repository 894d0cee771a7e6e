"""One definition of every message that crosses a process or network boundary.

Device <-> server messages travel as JSON text frames over the mutual-TLS WebSocket;
UI <-> agent messages travel as JSON lines over the agent's Unix socket; enrollment
and provisioning use the plain structs at the end. Each message is a frozen msgspec
Struct whose ``type`` tag names it on the wire, and every decode goes through a
:class:`Codec`, which turns any bad input into a :class:`ProtocolError` with a reason.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeAlias, TypeVar, overload

import msgspec

from kiosk.protocol import screen_settings
from kiosk.protocol.call import EndReason
from kiosk.protocol.errors import ProtocolError
from kiosk.protocol.update import Stage

#: "awaiting-approval": not enrolled yet; its token expired on the shelf and the server holds
#: it until logistics approve or reject it (the screen says "Venter på godkendelse fra kommunen").
DeviceState = Literal["unprovisioned", "awaiting-approval", "enrolled-unassigned", "assigned", "wipe-pending"]
Outcome = Literal["ok", "failed", "refused"]
CheckStatus = Literal["OK", "WARN", "FAIL"]
#: ``unit-wiped``: the device ends the call because a wipe arrived (only the device sends it).
HangUpReason = Literal["hung-up", "media-failed", "unit-wiped"]

#: A WebSocket frame or socket line larger than this is refused before it is parsed.
MAX_MESSAGE_BYTES = 256 * 1024


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    """Base of every tagged message."""


# --------------------------------------------------------------------------- commands
# A command's action is a tagged union: the tag is the command kind, the fields are its
# arguments. Adding a command means adding one struct here and one handler in the agent.


class Ping(Message, frozen=True, tag="ping"):
    pass


class Diagnostics(Message, frozen=True, tag="diagnostics"):
    pass


class Logs(Message, frozen=True, tag="logs"):
    lines: int = 200


class RestartUi(Message, frozen=True, tag="restart-ui"):
    pass


class Reboot(Message, frozen=True, tag="reboot"):
    pass


class Assign(Message, frozen=True, tag="assign"):
    """Hand the unit to a citizen. Personal data: stored encrypted on the device only."""

    citizen_name: str
    contact_staff: list[str] = []


class SetConfig(Message, frozen=True, tag="set-config"):
    """Change some of the screen's settings (``kiosk.protocol.screen_settings.ScreenSettings``
    says which and within what; the server checks before it signs, the unit again)."""

    settings: Annotated[dict[str, str | int | float | bool | list[str] | None],
                        msgspec.Meta(extra_json_schema=screen_settings.CHANGE_SCHEMA)]


class Wipe(Message, frozen=True, tag="wipe"):
    pass


#: How a planned visit repeats: "every morning at 8:00" is ``daily`` from a first visit at 8:00.
Repeat = Literal["once", "daily", "weekdays", "weekly"]
REPEATS: tuple[str, ...] = ("once", "daily", "weekdays", "weekly")
MAX_VISITS = 200  # per citizen: several a day for weeks, far more than a plan holds
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class ScheduledVisit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One entry of a citizen's visit plan, as the server holds it and the unit caches it.

    Personal data (who visits whom, when): encrypted on the unit, never logged."""

    id: str
    at: float  # Unix time of the first visit; repeats keep its local time of day
    staff_name: ShortText
    staff_role: ShortText
    kind: Annotated[str, msgspec.Meta(max_length=100)] = ""
    repeat: Repeat = "once"


class Schedule(Message, frozen=True, tag="schedule"):
    """The citizen's whole visit plan, sent whenever it changes (the newest replaces the last)."""

    visits: Annotated[list[ScheduledVisit], msgspec.Meta(max_length=MAX_VISITS)]


# ------------------------------------------------------------- a look at the screen
#: The citizen's answer when support asks to see the screen; ``unassigned``: nobody lives
#: with the unit, so nobody was asked (and the picture is sent).
LookAnswer = Literal["yes", "no", "no-answer", "unassigned"]
#: A picture of the screen is a PNG of at most this many bytes (the screen scales it down to
#: fit): with its base64 it still fits one line of the UI socket and one result frame.
MAX_SCREENSHOT_PNG_BYTES = 96 * 1024
#: Neither side of a picture of the screen may be larger (nor the picture unpacked larger).
MAX_SCREENSHOT_SIDE = 2560
ScreenshotPng = Annotated[bytes, msgspec.Meta(max_length=MAX_SCREENSHOT_PNG_BYTES)]


class Screenshot(Message, frozen=True, tag="screenshot"):
    """Support asks to see the screen. An assigned unit asks the citizen first (Ja / Nej, 60 s
    of silence is a no); the picture comes back only after a yes, or from an unassigned unit."""


# ------------------------------------------------------------------- a test ring
#: Support's test ring rings at least this long and at most this long (its default: a minute).
MIN_RING_TEST_SECONDS = 3.0
MAX_RING_TEST_SECONDS = 60.0
#: How a test ring ended on the screen: ``answered`` (a touch, or the big button), ``not-answered``
#: (its time ran out), ``in-call`` (refused: a call is on, and a test never interrupts one),
#: ``call-came`` (a real call rang meanwhile and took the screen).
RingTestAnswer = Literal["answered", "not-answered", "in-call", "call-came"]
#: The ring's sound as the screen knows it: ``played`` (it went to the speaker's output),
#: ``failed`` (it did not: ``sound_problem`` says why), ``no-speaker`` (the screen runs without sound).
RingSound = Literal["played", "failed", "no-speaker"]


class RingTest(Message, frozen=True, tag="test-ring"):
    """Support rings the unit to check its screen and speaker: it rings like a call, saying "test
    ring from support" (no caller, no video), for ``ring_seconds`` at most; a call is never interrupted."""

    ring_seconds: Annotated[float, msgspec.Meta(ge=MIN_RING_TEST_SECONDS, le=MAX_RING_TEST_SECONDS)] = 60.0


class RingTestHeard(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The ``detail`` of a ``test-ring`` command's result, as the screen reported it:
    ``answered_after`` (seconds of ringing) with an answer only; ``ring_sound`` unless it never rang."""

    answer: RingTestAnswer
    answered_after: Annotated[float, msgspec.Meta(ge=0, le=MAX_RING_TEST_SECONDS)] | None = None
    ring_sound: RingSound | None = None
    sound_problem: Annotated[str, msgspec.Meta(max_length=300)] | None = None

    def __post_init__(self) -> None:
        if (self.answer == "answered") != (self.answered_after is not None):
            raise ValueError("answered_after comes with the answer 'answered', and only with it")
        if (self.answer == "in-call") != (self.ring_sound is None):
            raise ValueError("ring_sound is stated unless the unit refused to ring (in-call)")
        if self.sound_problem is not None and self.ring_sound != "failed":
            raise ValueError("sound_problem comes with the ring_sound 'failed' only")


class Update(Message, frozen=True, tag="update"):
    """Install an OS release into the slot not running, then reboot into it at a quiet moment.

    ``path`` is the release's signed RAUC bundle on the server's device port: RAUC streams it
    over mutual TLS with the unit's own certificate, and trusts only the update CA in the image."""

    release: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    path: Annotated[str, msgspec.Meta(pattern=r"^/[A-Za-z0-9._~/+-]{1,255}$")]


CommandAction: TypeAlias = (
    Ping | Diagnostics | Logs | RestartUi | Reboot | Assign | SetConfig | Wipe | Schedule | Screenshot | Update
    | RingTest
)
COMMAND_KINDS: tuple[str, ...] = tuple(
    t.__struct_config__.tag for t in CommandAction.__args__
)


class Command(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the server signs. ``id`` is unique; the device refuses to run it twice."""

    id: str
    device_id: str
    issued_at: float
    expires_at: float
    action: CommandAction

    @property
    def kind(self) -> str:
        return str(self.action.__struct_config__.tag)


class DiagnosticCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    status: CheckStatus
    detail: str


class WipeReceipt(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the device proves it did. Signed inside a CommandResult by the device key."""

    erased: list[str]
    key_fingerprint: str | None  # SHA-256 of the destroyed per-assignment key, if there was one
    intent_at: float
    finished_at: float
    resumed_after_interruption: bool


class ScreenshotTaken(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The ``detail`` of a ``screenshot`` command's result: the answer, and the picture after a yes
    (or from an unassigned unit). ``png`` travels as base64."""

    answer: LookAnswer
    png: ScreenshotPng | None = None
    width: int | None = None
    height: int | None = None


class CommandResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the device signs after handling a command (or refusing it)."""

    command_id: str
    device_id: str
    kind: str
    outcome: Outcome
    finished_at: float
    reason: str | None = None
    detail: dict[str, Any] = {}


class SignedEnvelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Exact payload bytes plus a signature over them (bytes travel as base64)."""

    payload: bytes
    signature: bytes


# ------------------------------------------------------------- device <-> server (WSS)


class Hello(Message, frozen=True, tag="hello"):
    agent_version: str
    state: DeviceState
    ui_alive: bool


class Welcome(Message, frozen=True, tag="welcome"):
    device_id: str
    server_time: float
    heartbeat_interval: float


class Heartbeat(Message, frozen=True, tag="heartbeat"):
    seq: int
    sent_at: float
    state: DeviceState
    ui_alive: bool


class HeartbeatAck(Message, frozen=True, tag="heartbeat-ack"):
    seq: int
    sent_at: float  # echoed, so the device measures the round trip without clock sync
    server_time: float


class UpdateProgress(Message, frozen=True, tag="update-progress"):
    """How the unit's update to ``release`` stands; sent on each change and on each connect.

    ``slot``/``version``: what the unit runs now. ``detail``: why, for a failure or a fall-back."""

    release: str
    stage: Stage
    slot: str | None = None
    version: str | None = None
    detail: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class CommandDelivery(Message, frozen=True, tag="command"):
    envelope: SignedEnvelope


class CommandAck(Message, frozen=True, tag="command-ack"):
    command_id: str


class ResultDelivery(Message, frozen=True, tag="result"):
    envelope: SignedEnvelope


class ResultAck(Message, frozen=True, tag="result-ack"):
    command_id: str
    accepted: bool
    reason: str | None = None


class Rejected(Message, frozen=True, tag="rejected"):
    """Your last message was refused; the connection stays open."""

    reason: str
    detail: str


# ------------------------------------------------------------------ call signaling
# The same structs travel staff browser <-> server <-> agent <-> UI. The server relays
# SDP only; media goes peer to peer (or through our TURN). SDP is exchanged whole, with
# its ICE candidates gathered first (no trickle): one message each way.

MAX_SDP_CHARS = 64 * 1024


class IceServer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One entry of WebRTC's ``iceServers`` (urls, and TURN credentials)."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class CallStart(Message, frozen=True, tag="call-start"):
    """Staff -> server: please call this citizen."""

    citizen_id: str


class CallPlaced(Message, frozen=True, tag="call-placed"):
    """Server -> staff: the call exists and the unit is being asked to ring."""

    call_id: str
    citizen_name: str
    ice_servers: list[IceServer]
    relay_only: bool = False


#: A caller's photo (a PNG the server made from what staff gave it) is at most this large.
MAX_CALLER_PHOTO_BYTES = 48 * 1024
CALLER_PHOTO_SIDE = 240


class CallRing(Message, frozen=True, tag="call-ring"):
    """Server -> agent -> UI: ring, show who calls (with their photo, if they gave one), one big answer button."""

    call_id: str
    caller_name: str
    caller_role: str
    ice_servers: list[IceServer]
    relay_only: bool = False
    ring_timeout: float = 60.0
    caller_photo: Annotated[bytes, msgspec.Meta(max_length=MAX_CALLER_PHOTO_BYTES)] | None = None


class CallRinging(Message, frozen=True, tag="call-ringing"):
    """UI -> agent -> server -> staff: the unit is ringing (screen awake, tone on)."""

    call_id: str
    screen_awake: bool = True


class CallOffer(Message, frozen=True, tag="call-offer"):
    """UI -> agent -> server -> staff, while the unit rings: the unit's SDP offer.

    The caller answers it at once (:class:`CallAccept`), so ICE and DTLS are up before the
    citizen answers; neither side sends any media until :class:`CallAnswer`."""

    call_id: str
    sdp: Annotated[str, msgspec.Meta(max_length=MAX_SDP_CHARS)]


class CallAnswer(Message, frozen=True, tag="call-answer"):
    """UI -> agent -> server -> staff: the citizen answered; media may flow.

    ``sdp`` is None when the unit's offer went out while it rang (:class:`CallOffer`): that
    connection goes on (up already, or once the caller's answer arrives) and each side
    attaches its camera and microphone. It carries a fresh offer from a unit that did not
    pre-connect (an older one, or one whose offer or connection failed while ringing): the
    caller then answers it on a fresh connection."""

    call_id: str
    sdp: Annotated[str, msgspec.Meta(max_length=MAX_SDP_CHARS)] | None = None


class CallAccept(Message, frozen=True, tag="call-accept"):
    """Staff -> server -> agent -> UI: the staff browser's SDP answer (to :class:`CallOffer`
    while the unit rings, or to the offer in :class:`CallAnswer`)."""

    call_id: str
    sdp: Annotated[str, msgspec.Meta(max_length=MAX_SDP_CHARS)]


class CallConnected(Message, frozen=True, tag="call-connected"):
    """Either peer -> server: media flows."""

    call_id: str


class CallResume(Message, frozen=True, tag="call-resume"):
    """Staff -> server, on a new call socket: take up my call in progress again.

    Sent after the call socket dropped (a server restart, a network blink) while
    media still flowed peer to peer; the server answers only if the call has
    ended meanwhile (with its :class:`CallEnded`)."""

    call_id: str


class CallHangUp(Message, frozen=True, tag="call-hangup"):
    """Either side -> server: end the call (``media-failed`` when media could not be set up)."""

    call_id: str
    reason: HangUpReason = "hung-up"


class DeviceFacts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the server knew of the unit when a call ended: the answer to "is the citizen
    all right, or was the screen off?" as far as technique can tell."""

    online: bool
    online_since: float | None
    last_seen: float | None
    rang_for_seconds: float | None
    ui_alive: bool | None
    screen_awake: bool | None


class CallEnded(Message, frozen=True, tag="call-ended"):
    """Server -> both sides: the call is over, and why."""

    call_id: str
    reason: EndReason
    facts: DeviceFacts | None = None


#: One call's quality as a peer measured it: numbers, and a few words such as ``ice_path``.
#: The Python peers (kiosk.media.stats.CallQuality) send, besides bitrate, loss, jitter and
#: round trip: ``frames_decoded``, ``freezes`` and ``frozen_s`` (their total), ``outages``,
#: ``longest_outage_s``, ``recovery_s`` (video back after media returned),
#: ``lowest_bitrate_sent_bps`` and ``ice_path`` ("direct" or "relay"); the page sends what
#: the browser's stats offer under the same names where they exist.
CallQuality: TypeAlias = dict[str, float | int | str | None]


class CallQualityReport(Message, frozen=True, tag="call-quality"):
    """Either peer -> server after a call: its quality summary (never any media)."""

    call_id: str
    quality: CallQuality


DeviceToServer: TypeAlias = (
    Hello | Heartbeat | CommandAck | ResultDelivery | Rejected | CallRinging | CallOffer | CallAnswer
    | CallConnected | CallHangUp | CallQualityReport | UpdateProgress
)
ServerToDevice: TypeAlias = (
    Welcome | HeartbeatAck | CommandDelivery | ResultAck | Rejected | CallRing | CallAccept | CallEnded
)
StaffToServer: TypeAlias = CallStart | CallResume | CallAccept | CallConnected | CallHangUp | CallQualityReport
ServerToStaff: TypeAlias = CallPlaced | CallRinging | CallOffer | CallAnswer | CallEnded | Rejected


# ------------------------------------------------------------------ UI <-> agent (Unix)


class UiHello(Message, frozen=True, tag="ui-hello"):
    ui_version: str


class UiHeartbeat(Message, frozen=True, tag="ui-heartbeat"):
    screen_awake: bool


class GetStatus(Message, frozen=True, tag="get-status"):
    pass


class PlannedVisit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One planned video visit, as the citizen's screen lists it ("I dag kl. 10:30 — Anne, sygeplejerske")."""

    at: float  # Unix time of the visit
    staff_name: str
    staff_role: str
    kind: str = ""  # e.g. "medicin", shown after the role when given


class AgentStatus(Message, frozen=True, tag="status"):
    """What the UI shows: never more than the screen needs."""

    state: DeviceState
    server_online: bool
    citizen_name: str | None = None
    contact_staff: list[str] = []
    visits: list[PlannedVisit] = []  # upcoming visits, from the server's schedule


class ScreenshotRequest(Message, frozen=True, tag="screenshot-request"):
    """Agent -> UI: support asks to see the screen (``request_id`` is the command's id); with
    ``ask_consent`` the citizen is asked first, without it (an unassigned unit) nobody is."""

    request_id: str
    ask_consent: bool


class ScreenshotReply(Message, frozen=True, tag="screenshot-reply"):
    """UI -> agent: the answer, the picture after a yes (or when nobody was asked), or
    ``error`` when the picture could not be taken (a headless screen has none)."""

    request_id: str
    answer: LookAnswer
    png: ScreenshotPng | None = None
    error: Annotated[str, msgspec.Meta(max_length=300)] | None = None


class RingTestRequest(Message, frozen=True, tag="test-ring-request"):
    """Agent -> UI: support's test ring (``request_id`` is the command's id): ring for at most ``ring_seconds``."""

    request_id: str
    ring_seconds: Annotated[float, msgspec.Meta(ge=MIN_RING_TEST_SECONDS, le=MAX_RING_TEST_SECONDS)]


class RingTestReply(Message, frozen=True, tag="test-ring-reply"):
    """UI -> agent: how the test ring ended, and how its sound went."""

    request_id: str
    heard: RingTestHeard


#: What the agent asks the screen on support's behalf, and the screen's replies.
ScreenRequest: TypeAlias = ScreenshotRequest | RingTestRequest
ScreenReply: TypeAlias = ScreenshotReply | RingTestReply

UiToAgent: TypeAlias = (
    UiHello | UiHeartbeat | GetStatus | CallRinging | CallOffer | CallAnswer | CallConnected | CallHangUp
    | CallQualityReport | ScreenshotReply | RingTestReply
)
AgentToUi: TypeAlias = (
    AgentStatus | Rejected | CallRing | CallAccept | CallEnded | ScreenshotRequest | RingTestRequest
)
#: The call messages the agent passes on unchanged, in each direction.
CALL_UPSTREAM = (CallRinging, CallOffer, CallAnswer, CallConnected, CallHangUp, CallQualityReport)
CALL_DOWNSTREAM = (CallRing, CallAccept, CallEnded)


# -------------------------------------------------------------- enrollment (HTTPS JSON)


class EnrollRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: str
    csr_pem: str
    agent_version: str
    serial_number: str = ""  # the unit's hardware serial, so logistics can tell a held unit apart


class EnrollResponse(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    device_id: str
    certificate_pem: str
    ca_pem: str
    command_public_key_pem: str
    municipality: str
    heartbeat_interval: float


class EnrollHeld(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """HTTP 202: the token expired unused; the unit waits for logistics to approve or reject it."""

    device_id: str  # the id the unit will have once approved (``kiosk-server device approve``)
    message: str


class ErrorResponse(msgspec.Struct, frozen=True):
    """Every HTTP error: a stable code for programs and a sentence for people."""

    error: str
    message: str


# ------------------------------------------------------------------------------ codecs

T = TypeVar("T")


class Codec(Generic[T]):
    """Decodes one message type (or tagged union) from JSON, with a size limit.

    Every failure, whatever the input, is a :class:`ProtocolError`; nothing else escapes.
    """

    @overload
    def __init__(self: Codec[T], message_type: type[T], max_bytes: int = MAX_MESSAGE_BYTES) -> None: ...
    @overload  # a union of message types: annotate the codec where it is made
    def __init__(self, message_type: Any, max_bytes: int = MAX_MESSAGE_BYTES) -> None: ...

    def __init__(self, message_type: Any, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(message_type)
        self._max_bytes = max_bytes

    def decode(self, data: bytes | str) -> T:
        try:
            raw = data.encode() if isinstance(data, str) else data
        except UnicodeEncodeError as exc:
            raise ProtocolError("malformed", f"text is not valid Unicode: {exc.reason}") from None
        if len(raw) > self._max_bytes:
            raise ProtocolError("oversized", f"message of {len(raw)} bytes exceeds {self._max_bytes}")
        try:
            return self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise ProtocolError(_validation_reason(str(exc)), str(exc)) from None
        except msgspec.DecodeError as exc:
            raise ProtocolError("malformed", f"not valid JSON: {exc}") from None
        except UnicodeDecodeError as exc:  # msgspec's error for bad UTF-8 inside a string
            raise ProtocolError("malformed", f"not UTF-8: {exc.reason}") from None
        except RecursionError:  # msgspec recurses into nested values, even ones it skips
            raise ProtocolError("malformed", "nested too deeply") from None


def _validation_reason(text: str) -> str:
    if "Invalid value" in text and "`$.type`" in text:
        return "unknown-type"
    if "missing required field `type`" in text:
        return "unknown-type"
    return "invalid"


def encode(message: Any) -> bytes:
    return msgspec.json.encode(message)


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def convert(value: Any, message_type: type[T] | Any, *, strict: bool = True) -> T:
    """Build a message from plain data (e.g. parsed YAML or CLI args), as a ProtocolError on failure."""
    try:
        return msgspec.convert(value, message_type, strict=strict)
    except msgspec.ValidationError as exc:
        raise ProtocolError(_validation_reason(str(exc)), str(exc)) from None
    except RecursionError:
        raise ProtocolError("malformed", "nested too deeply") from None


DEVICE_TO_SERVER: Codec[DeviceToServer] = Codec(DeviceToServer)
SERVER_TO_DEVICE: Codec[ServerToDevice] = Codec(ServerToDevice)
#: The largest message the UI sends: a call's SDP, or a picture of the screen in base64.
MAX_UI_MESSAGE_BYTES = max(MAX_SDP_CHARS, (MAX_SCREENSHOT_PNG_BYTES + 2) // 3 * 4) + 4096
UI_TO_AGENT: Codec[UiToAgent] = Codec(UiToAgent, max_bytes=MAX_UI_MESSAGE_BYTES)
STAFF_TO_SERVER: Codec[StaffToServer] = Codec(StaffToServer, max_bytes=MAX_SDP_CHARS + 4096)
SERVER_TO_STAFF: Codec[ServerToStaff] = Codec(ServerToStaff)
AGENT_TO_UI: Codec[AgentToUi] = Codec(AgentToUi)
COMMAND: Codec[Command] = Codec(Command)
COMMAND_RESULT: Codec[CommandResult] = Codec(CommandResult)
ENROLL_REQUEST: Codec[EnrollRequest] = Codec(EnrollRequest, max_bytes=32 * 1024)
ENROLL_RESPONSE: Codec[EnrollResponse] = Codec(EnrollResponse, max_bytes=64 * 1024)
ENROLL_HELD: Codec[EnrollHeld] = Codec(EnrollHeld, max_bytes=16 * 1024)
ERROR_RESPONSE: Codec[ErrorResponse] = Codec(ErrorResponse, max_bytes=16 * 1024)
