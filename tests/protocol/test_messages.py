"""Tests for kiosk.protocol.messages: every message shape and every Codec.

The contract under test: every message survives encode -> Codec.decode unchanged, and
whatever else a Codec is given (random bytes, random JSON, torn frames, huge frames,
unknown tags, wrong field types) it raises ProtocolError with one of the documented
reasons, and never any other exception.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.protocol import messages as m
from kiosk.protocol import update
from kiosk.protocol.call import EndReason
from kiosk.protocol.errors import ProtocolError

pytestmark = pytest.mark.timeout(120)

REASONS = frozenset({"malformed", "oversized", "unknown-type", "invalid"})
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------- strategies

text = st.text(max_size=24)
finite = st.floats(allow_nan=False, allow_infinity=False)
look_answers = st.sampled_from(typing.get_args(m.LookAnswer))
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
states = st.sampled_from(typing.get_args(m.DeviceState))
outcomes = st.sampled_from(typing.get_args(m.Outcome))
check_statuses = st.sampled_from(typing.get_args(m.CheckStatus))

json_scalars = st.none() | st.booleans() | int64 | finite | text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)

envelopes = st.builds(m.SignedEnvelope, payload=st.binary(max_size=64), signature=st.binary(max_size=80))

short_text = st.text(min_size=1, max_size=24)
scheduled_visits = st.builds(m.ScheduledVisit, id=text, at=finite, staff_name=short_text, staff_role=short_text,
                             kind=text, repeat=st.sampled_from(m.REPEATS))
ACTION_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    m.Ping: st.builds(m.Ping),
    m.Diagnostics: st.builds(m.Diagnostics),
    m.Logs: st.builds(m.Logs, lines=int64),
    m.RestartUi: st.builds(m.RestartUi),
    m.Reboot: st.builds(m.Reboot),
    m.Assign: st.builds(m.Assign, citizen_name=text, contact_staff=st.lists(text, max_size=4)),
    m.SetConfig: st.builds(
        m.SetConfig,
        settings=st.dictionaries(text, text | int64 | finite | st.booleans(), max_size=5),
    ),
    m.Wipe: st.builds(m.Wipe),
    m.Schedule: st.builds(m.Schedule, visits=st.lists(scheduled_visits, max_size=3)),
    m.Update: st.builds(m.Update, release=short_text, path=st.from_regex(r"/[A-Za-z0-9._~/+-]{1,40}", fullmatch=True)),
    m.Screenshot: st.builds(m.Screenshot),
    m.RingTest: st.builds(m.RingTest, ring_seconds=st.floats(m.MIN_RING_TEST_SECONDS, m.MAX_RING_TEST_SECONDS)),
}
actions = st.one_of(*ACTION_STRATEGIES.values())

commands = st.builds(
    m.Command, id=text, device_id=text, issued_at=finite, expires_at=finite, action=actions
)
results = st.builds(
    m.CommandResult,
    command_id=text,
    device_id=text,
    kind=text,
    outcome=outcomes,
    finished_at=finite,
    reason=st.none() | text,
    detail=st.dictionaries(text, json_values, max_size=4),
)

ice_servers = st.builds(
    m.IceServer, urls=st.lists(text, max_size=3), username=st.none() | text, credential=st.none() | text
)
sdps = st.text(max_size=200)
optional_times = st.none() | finite
device_facts = st.builds(
    m.DeviceFacts,
    online=st.booleans(),
    online_since=optional_times,
    last_seen=optional_times,
    rang_for_seconds=optional_times,
    ui_alive=st.none() | st.booleans(),
    screen_awake=st.none() | st.booleans(),
)

ring_tests_heard = st.one_of(
    st.builds(m.RingTestHeard, answer=st.just("answered"), answered_after=st.floats(0, m.MAX_RING_TEST_SECONDS),
              ring_sound=st.sampled_from(["played", "no-speaker"])),
    st.builds(m.RingTestHeard, answer=st.sampled_from(["not-answered", "call-came"]), ring_sound=st.just("failed"),
              sound_problem=st.none() | text),
    st.builds(m.RingTestHeard, answer=st.just("in-call")),
)
planned_visits = st.builds(m.PlannedVisit, at=finite, staff_name=text, staff_role=text, kind=text)

#: One strategy per message struct defined in kiosk.protocol.messages.
MESSAGE_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    **ACTION_STRATEGIES,
    m.Command: commands,
    m.ScheduledVisit: scheduled_visits,
    m.DiagnosticCheck: st.builds(m.DiagnosticCheck, name=text, status=check_statuses, detail=text),
    m.ScreenshotRequest: st.builds(m.ScreenshotRequest, request_id=text, ask_consent=st.booleans()),
    m.ScreenshotReply: st.builds(m.ScreenshotReply, request_id=text, answer=look_answers,
                                 png=st.none() | st.binary(max_size=64), error=st.none() | text),
    m.ScreenshotTaken: st.builds(m.ScreenshotTaken, answer=look_answers, png=st.none() | st.binary(max_size=64),
                                 width=st.none() | int64, height=st.none() | int64),
    m.RingTestHeard: ring_tests_heard,
    m.RingTestRequest: st.builds(m.RingTestRequest, request_id=text,
                                 ring_seconds=st.floats(m.MIN_RING_TEST_SECONDS, m.MAX_RING_TEST_SECONDS)),
    m.RingTestReply: st.builds(m.RingTestReply, request_id=text, heard=ring_tests_heard),
    m.WipeReceipt: st.builds(
        m.WipeReceipt,
        erased=st.lists(text, max_size=5),
        key_fingerprint=st.none() | text,
        intent_at=finite,
        finished_at=finite,
        resumed_after_interruption=st.booleans(),
    ),
    m.CommandResult: results,
    m.SignedEnvelope: envelopes,
    m.Hello: st.builds(m.Hello, agent_version=text, state=states, ui_alive=st.booleans()),
    m.Welcome: st.builds(m.Welcome, device_id=text, server_time=finite, heartbeat_interval=finite),
    m.Heartbeat: st.builds(m.Heartbeat, seq=int64, sent_at=finite, state=states, ui_alive=st.booleans()),
    m.HeartbeatAck: st.builds(m.HeartbeatAck, seq=int64, sent_at=finite, server_time=finite),
    m.CommandDelivery: st.builds(m.CommandDelivery, envelope=envelopes),
    m.CommandAck: st.builds(m.CommandAck, command_id=text),
    m.ResultDelivery: st.builds(m.ResultDelivery, envelope=envelopes),
    m.ResultAck: st.builds(m.ResultAck, command_id=text, accepted=st.booleans(), reason=st.none() | text),
    m.Rejected: st.builds(m.Rejected, reason=text, detail=text),
    m.UpdateProgress: st.builds(m.UpdateProgress, release=text, stage=st.sampled_from(update.STAGES),
                                slot=st.none() | text, version=st.none() | text, detail=text),
    m.UiHello: st.builds(m.UiHello, ui_version=text),
    m.UiHeartbeat: st.builds(m.UiHeartbeat, screen_awake=st.booleans()),
    m.GetStatus: st.builds(m.GetStatus),
    m.IceServer: ice_servers,
    m.CallStart: st.builds(m.CallStart, citizen_id=text),
    m.CallPlaced: st.builds(
        m.CallPlaced, call_id=text, citizen_name=text, ice_servers=st.lists(ice_servers, max_size=2),
        relay_only=st.booleans(),
    ),
    m.CallRing: st.builds(
        m.CallRing, call_id=text, caller_name=text, caller_role=text, ice_servers=st.lists(ice_servers, max_size=2),
        relay_only=st.booleans(), ring_timeout=finite,
    ),
    m.CallRinging: st.builds(m.CallRinging, call_id=text, screen_awake=st.booleans()),
    m.CallOffer: st.builds(m.CallOffer, call_id=text, sdp=sdps),
    m.CallAnswer: st.builds(m.CallAnswer, call_id=text, sdp=st.none() | sdps),
    m.CallAccept: st.builds(m.CallAccept, call_id=text, sdp=sdps),
    m.CallConnected: st.builds(m.CallConnected, call_id=text),
    m.CallResume: st.builds(m.CallResume, call_id=text),
    m.CallHangUp: st.builds(m.CallHangUp, call_id=text, reason=st.sampled_from(["hung-up", "media-failed"])),
    m.DeviceFacts: device_facts,
    m.CallEnded: st.builds(
        m.CallEnded, call_id=text, reason=st.sampled_from(EndReason), facts=st.none() | device_facts
    ),
    m.CallQualityReport: st.builds(
        m.CallQualityReport, call_id=text, quality=st.dictionaries(text, st.none() | int64 | finite, max_size=5)
    ),
    m.AgentStatus: st.builds(
        m.AgentStatus,
        state=states,
        server_online=st.booleans(),
        citizen_name=st.none() | text,
        contact_staff=st.lists(text, max_size=3),
        visits=st.lists(planned_visits, max_size=3),
    ),
    m.PlannedVisit: planned_visits,
    m.EnrollRequest: st.builds(m.EnrollRequest, token=text, csr_pem=text, agent_version=text, serial_number=text),
    m.EnrollResponse: st.builds(
        m.EnrollResponse,
        device_id=text,
        certificate_pem=text,
        ca_pem=text,
        command_public_key_pem=text,
        municipality=text,
        heartbeat_interval=finite,
    ),
    m.EnrollHeld: st.builds(m.EnrollHeld, device_id=text, message=text),
    m.ErrorResponse: st.builds(m.ErrorResponse, error=text, message=text),
}

#: Each module-level codec, the type it decodes, and its size limit.
CODECS: dict[str, tuple[m.Codec[Any], Any, int]] = {
    "DEVICE_TO_SERVER": (m.DEVICE_TO_SERVER, m.DeviceToServer, m.MAX_MESSAGE_BYTES),
    "SERVER_TO_DEVICE": (m.SERVER_TO_DEVICE, m.ServerToDevice, m.MAX_MESSAGE_BYTES),
    "UI_TO_AGENT": (m.UI_TO_AGENT, m.UiToAgent, m.MAX_UI_MESSAGE_BYTES),
    "STAFF_TO_SERVER": (m.STAFF_TO_SERVER, m.StaffToServer, m.MAX_SDP_CHARS + 4096),
    "SERVER_TO_STAFF": (m.SERVER_TO_STAFF, m.ServerToStaff, m.MAX_MESSAGE_BYTES),
    "AGENT_TO_UI": (m.AGENT_TO_UI, m.AgentToUi, m.MAX_MESSAGE_BYTES),
    "COMMAND": (m.COMMAND, m.Command, m.MAX_MESSAGE_BYTES),
    "COMMAND_RESULT": (m.COMMAND_RESULT, m.CommandResult, m.MAX_MESSAGE_BYTES),
    "ENROLL_REQUEST": (m.ENROLL_REQUEST, m.EnrollRequest, 32 * 1024),
    "ENROLL_RESPONSE": (m.ENROLL_RESPONSE, m.EnrollResponse, 64 * 1024),
    "ENROLL_HELD": (m.ENROLL_HELD, m.EnrollHeld, 16 * 1024),
    "ERROR_RESPONSE": (m.ERROR_RESPONSE, m.ErrorResponse, 16 * 1024),
}


def is_union(message_type: Any) -> bool:
    return typing.get_origin(message_type) in (typing.Union, types.UnionType)


UNION_CODECS = {name: entry for name, entry in CODECS.items() if is_union(entry[1])}


def members(message_type: Any) -> tuple[type[Any], ...]:
    """The struct types a codec's target type accepts."""
    if is_union(message_type):
        return typing.get_args(message_type)
    return (message_type,)


def message_for_codec(name: str) -> st.SearchStrategy[Any]:
    return st.one_of(*(MESSAGE_STRATEGIES[t] for t in members(CODECS[name][1])))


codec_and_message: st.SearchStrategy[tuple[str, Any]] = st.sampled_from(sorted(CODECS)).flatmap(
    lambda name: st.tuples(st.just(name), message_for_codec(name))
)


def tag(struct_type: type[Any]) -> str | None:
    value = struct_type.__struct_config__.tag
    return value if isinstance(value, str) else None


ALL_TAGS = sorted(t for t in (tag(s) for s in MESSAGE_STRATEGIES) if t is not None)


def assert_protocol_error_or_value(decode: Callable[[], Any]) -> ProtocolError | None:
    """Run ``decode``; anything but success or a ProtocolError with a known reason fails."""
    try:
        decode()
    except ProtocolError as exc:
        assert exc.reason in REASONS, exc
        assert exc.detail
        return exc
    return None


# ------------------------------------------------------------------------ round trips


def test_every_message_struct_has_a_strategy() -> None:
    defined = {
        value
        for value in vars(m).values()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == m.__name__
        and value is not m.Message
    }
    assert defined == set(MESSAGE_STRATEGIES)


def test_every_module_level_codec_is_covered() -> None:
    defined = {name for name, value in vars(m).items() if isinstance(value, m.Codec)}
    assert defined == set(CODECS)
    for name, (codec, _, _) in CODECS.items():
        assert getattr(m, name) is codec


def test_every_tagged_message_is_in_some_union() -> None:
    in_unions = {t for _, target, _ in CODECS.values() for t in members(target)}
    in_unions |= set(typing.get_args(m.CommandAction))
    tagged = {t for t in MESSAGE_STRATEGIES if tag(t) is not None}
    assert tagged <= in_unions


@FAST
@given(codec_and_message)
def test_round_trip_through_its_codec(case: tuple[str, Any]) -> None:
    name, message = case
    codec = CODECS[name][0]
    data = m.encode(message)
    assert codec.decode(data) == message
    assert codec.decode(data.decode()) == message  # text frames arrive as str


@FAST
@given(st.sampled_from(sorted(MESSAGE_STRATEGIES, key=lambda t: t.__name__)).flatmap(lambda t: MESSAGE_STRATEGIES[t]))
def test_round_trip_every_struct_through_a_codec_of_its_own_type(message: Any) -> None:
    assert m.Codec(type(message)).decode(m.encode(message)) == message
    assert m.convert(m.to_builtins(message), type(message)) == message


def test_tagged_messages_carry_their_type_on_the_wire() -> None:
    wire = json.loads(m.encode(m.Heartbeat(seq=3, sent_at=1.5, state="assigned", ui_alive=True)))
    assert wire == {"type": "heartbeat", "seq": 3, "sent_at": 1.5, "state": "assigned", "ui_alive": True}


def test_envelope_bytes_travel_as_base64() -> None:
    wire = json.loads(m.encode(m.SignedEnvelope(payload=b"\x00\xff", signature=b"sig")))
    assert wire == {"payload": "AP8=", "signature": "c2ln"}


def test_defaults_may_be_omitted_on_the_wire() -> None:
    assert m.AGENT_TO_UI.decode(b'{"type":"status","state":"assigned","server_online":true}') == m.AgentStatus(
        state="assigned", server_online=True, citizen_name=None, contact_staff=[]
    )
    command = m.COMMAND.decode(
        b'{"id":"c","device_id":"d","issued_at":1,"expires_at":2,"action":{"type":"logs"}}'
    )
    assert command.action == m.Logs(lines=200)
    assert command.kind == "logs"


@pytest.mark.parametrize("name", sorted(UNION_CODECS))
def test_union_codecs_refuse_messages_meant_for_another_channel(name: str) -> None:
    codec, target, _ = CODECS[name]
    accepted = set(members(target))
    foreign = [t for t in MESSAGE_STRATEGIES if tag(t) is not None and t not in accepted]
    assert foreign
    for struct_type in foreign:
        data = json.dumps({"type": tag(struct_type)}).encode()
        with pytest.raises(ProtocolError) as info:
            codec.decode(data)
        assert info.value.reason == "unknown-type", struct_type


# ------------------------------------------------------------------------- bad input


@FAST
@given(st.sampled_from(sorted(CODECS)), st.binary(max_size=300))
def test_random_bytes_give_only_protocol_errors(name: str, data: bytes) -> None:
    assert_protocol_error_or_value(lambda: CODECS[name][0].decode(data))


@FAST
@given(st.sampled_from(sorted(CODECS)), st.text(max_size=200))
def test_random_text_gives_only_protocol_errors(name: str, data: str) -> None:
    assert_protocol_error_or_value(lambda: CODECS[name][0].decode(data))


@FAST
@given(st.sampled_from(sorted(CODECS)), json_values)
def test_random_json_values_give_only_protocol_errors(name: str, value: Any) -> None:
    data = json.dumps(value).encode()
    assert_protocol_error_or_value(lambda: CODECS[name][0].decode(data))


@FAST
@given(
    st.sampled_from(sorted(CODECS)),
    st.sampled_from([*ALL_TAGS, "", "nope", "PING"]) | text,
    st.dictionaries(
        st.sampled_from(sorted({f for t in MESSAGE_STRATEGIES for f in t.__struct_fields__})) | text,
        json_values,
        max_size=6,
    ),
)
def test_json_objects_with_random_tags_and_fields_give_only_protocol_errors(
    name: str, type_tag: str, fields: dict[str, Any]
) -> None:
    data = json.dumps({"type": type_tag, **fields}).encode()
    assert_protocol_error_or_value(lambda: CODECS[name][0].decode(data))


@FAST
@given(codec_and_message, st.data())
def test_truncated_frames_are_malformed(case: tuple[str, Any], data: st.DataObject) -> None:
    name, message = case
    encoded = m.encode(message)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1), label="cut")
    with pytest.raises(ProtocolError) as info:
        CODECS[name][0].decode(encoded[:cut])
    assert info.value.reason == "malformed"


@FAST
@given(codec_and_message, st.data())
def test_a_field_replaced_by_a_random_json_value_gives_only_protocol_errors(
    case: tuple[str, Any], data: st.DataObject
) -> None:
    name, message = case
    wire = m.to_builtins(message)
    fields = sorted(k for k in wire if k != "type")
    if not fields:
        return
    key = data.draw(st.sampled_from(fields), label="field")
    wire[key] = data.draw(json_values, label="value")
    encoded = m.encode(wire)
    error = assert_protocol_error_or_value(lambda: CODECS[name][0].decode(encoded))
    if error is not None:
        assert error.reason in {"invalid", "unknown-type"}


@pytest.mark.parametrize("name", sorted(CODECS))
def test_oversized_frames_are_refused_before_parsing(name: str) -> None:
    codec, _, limit = CODECS[name]
    with pytest.raises(ProtocolError) as info:
        codec.decode(b"{" * (limit + 1))  # would be "malformed" if it were parsed
    assert info.value.reason == "oversized"
    assert str(limit) in info.value.detail


@pytest.mark.parametrize("name", sorted(CODECS))
def test_size_limit_is_inclusive_and_counts_bytes(name: str) -> None:
    codec, _, limit = CODECS[name]
    valid = {
        "DEVICE_TO_SERVER": m.CommandAck(command_id="c"),
        "SERVER_TO_DEVICE": m.ResultAck(command_id="c", accepted=True),
        "UI_TO_AGENT": m.GetStatus(),
        "STAFF_TO_SERVER": m.CallConnected(call_id="c"),
        "SERVER_TO_STAFF": m.CallRinging(call_id="c"),
        "AGENT_TO_UI": m.AgentStatus(state="assigned", server_online=False),
        "COMMAND": m.Command(id="c", device_id="d", issued_at=1.0, expires_at=2.0, action=m.Ping()),
        "COMMAND_RESULT": m.CommandResult(
            command_id="c", device_id="d", kind="ping", outcome="ok", finished_at=1.0
        ),
        "ENROLL_REQUEST": m.EnrollRequest(token="t", csr_pem="p", agent_version="v"),
        "ENROLL_RESPONSE": m.EnrollResponse(
            device_id="d", certificate_pem="c", ca_pem="a", command_public_key_pem="k",
            municipality="Ærø", heartbeat_interval=30.0,
        ),
        "ENROLL_HELD": m.EnrollHeld(device_id="d", message="Venter"),
        "ERROR_RESPONSE": m.ErrorResponse(error="e", message="m"),
    }[name]
    encoded = m.encode(valid)
    exactly = encoded + b" " * (limit - len(encoded))
    assert len(exactly) == limit
    assert codec.decode(exactly) == valid
    with pytest.raises(ProtocolError) as info:
        codec.decode(exactly + b" ")
    assert info.value.reason == "oversized"
    # A str is measured in UTF-8 bytes, not characters: "æ" is two bytes.
    as_text = encoded.decode() + " " * (limit - len(encoded) - 1) + "æ"
    assert len(as_text) <= limit < len(as_text.encode())
    with pytest.raises(ProtocolError) as info:
        codec.decode(as_text)
    assert info.value.reason == "oversized"


@pytest.mark.parametrize("name", sorted(UNION_CODECS))
@pytest.mark.parametrize(
    "frame", [b'{"type":"nope"}', b'{"type":""}', b'{"type":"HELLO"}', b"{}", b'{"seq":1}']
)
def test_unknown_or_missing_type_tags(name: str, frame: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        CODECS[name][0].decode(frame)
    assert info.value.reason == "unknown-type"


@pytest.mark.parametrize(
    ("codec", "frame"),
    [
        (m.DEVICE_TO_SERVER, b'{"type":"heartbeat","seq":"1","sent_at":1,"state":"assigned","ui_alive":true}'),
        (m.DEVICE_TO_SERVER, b'{"type":"heartbeat","seq":1.5,"sent_at":1,"state":"assigned","ui_alive":true}'),
        (m.DEVICE_TO_SERVER, b'{"type":"hello","agent_version":"1","state":"assigned","ui_alive":1}'),
        (m.DEVICE_TO_SERVER, b'{"type":"hello","agent_version":"1","state":"stolen","ui_alive":true}'),
        (m.DEVICE_TO_SERVER, b'{"type":"hello","agent_version":null,"state":"assigned","ui_alive":true}'),
        (m.DEVICE_TO_SERVER, b'{"type":"hello","agent_version":"1","state":"assigned"}'),
        (m.DEVICE_TO_SERVER, b'{"type":"hello","agent_version":"1","state":"assigned","ui_alive":true,"x":1}'),
        (m.DEVICE_TO_SERVER, b'{"type":"result","envelope":{"payload":"!!","signature":""}}'),
        (m.DEVICE_TO_SERVER, b'{"type":"result","envelope":"AAAA"}'),
        (m.DEVICE_TO_SERVER, b'{"type":1}'),
        (m.DEVICE_TO_SERVER, b"[]"),
        (m.DEVICE_TO_SERVER, b'"hello"'),
        (m.DEVICE_TO_SERVER, b"null"),
        (m.SERVER_TO_DEVICE, b'{"type":"heartbeat-ack","seq":1,"sent_at":1e999,"server_time":2}'),
        (m.UI_TO_AGENT, b'{"type":"ui-heartbeat","screen_awake":"yes"}'),
        (m.AGENT_TO_UI, b'{"type":"call-ended","call_id":"c","reason":"exploded"}'),
        (m.SERVER_TO_STAFF, b'{"type":"call-ended","call_id":"c","reason":"HUNG_UP_BY_STAFF"}'),
        (m.COMMAND, b'{"id":"c","device_id":"d","issued_at":"now","expires_at":2,"action":{"type":"ping"}}'),
        (m.COMMAND, b'{"id":"c","device_id":"d","issued_at":1,"expires_at":2,"action":{"type":"zzz"}}'),
        (m.COMMAND, b'{"id":"c","device_id":"d","issued_at":1,"expires_at":2,"action":{"type":"logs","lines":"9"}}'),
        (m.COMMAND, (b'{"id":"c","device_id":"d","issued_at":1,"expires_at":2,'
                     b'"action":{"type":"set-config","settings":{"a":[1]}}}')),
        (m.COMMAND, b'{"id":"c","device_id":"d","issued_at":1,"expires_at":2,"action":{"type":"ping","x":1}}'),
        (m.COMMAND_RESULT, b'{"command_id":"c","device_id":"d","kind":"k","outcome":"maybe","finished_at":1}'),
        (m.COMMAND_RESULT, b'{"command_id":"c","device_id":"d","kind":"k","outcome":"ok","finished_at":1,"detail":[]}'),
        (m.ENROLL_REQUEST, b'{"token":"t","csr_pem":"p"}'),
        (m.ERROR_RESPONSE, b'{"error":1,"message":"m"}'),
    ],
)
def test_wrong_field_types_missing_and_unknown_fields_are_invalid(codec: m.Codec[Any], frame: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        codec.decode(frame)
    assert info.value.reason == "invalid"
    assert info.value.detail


def test_an_end_reason_arrives_as_the_shared_enum() -> None:
    ended = m.SERVER_TO_STAFF.decode(b'{"type":"call-ended","call_id":"c","reason":"not_answered"}')
    assert isinstance(ended, m.CallEnded) and ended.reason is EndReason.NOT_ANSWERED
    assert m.encode(ended) == b'{"type":"call-ended","call_id":"c","reason":"not_answered","facts":null}'


@pytest.mark.parametrize(
    "frame", [b"", b"{", b"{]", b'{"type":"hello",}', b"\xff\xfe", b'{"type":"h\xffllo"}', b"nul", b'{"type" "hello"}']
)
def test_not_json_is_malformed(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        m.DEVICE_TO_SERVER.decode(frame)
    assert info.value.reason == "malformed"
    assert "JSON" in info.value.detail or "UTF-8" in info.value.detail


def test_error_response_tolerates_extra_fields() -> None:
    # The one struct without forbid_unknown_fields: a newer server may add fields to errors.
    assert m.ERROR_RESPONSE.decode(b'{"error":"e","message":"m","hint":"x"}') == m.ErrorResponse("e", "m")


def test_protocol_error_is_a_value_error_with_reason_and_detail() -> None:
    exc = ProtocolError("invalid", "bad thing")
    assert isinstance(exc, ValueError)
    assert (exc.reason, exc.detail, str(exc)) == ("invalid", "bad thing", "invalid: bad thing")


DEEP = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("DEVICE_TO_SERVER", b'{"x":' + DEEP + b',"type":"hello"}'),
        ("UI_TO_AGENT", b'{"x":' + DEEP + b',"type":"get-status"}'),
        ("STAFF_TO_SERVER", b'{"x":' + DEEP + b',"type":"call-start"}'),
        ("SERVER_TO_DEVICE", b'{"x":' + DEEP + b',"type":"welcome"}'),
        ("COMMAND_RESULT", b'{"detail":{"x":' + DEEP + b"}}"),
        ("ERROR_RESPONSE", b'{"error":"e","message":"m","x":' + b"[" * 3000 + b"]" * 3000 + b"}"),
    ],
)
def test_deeply_nested_json_is_a_protocol_error(name: str, frame: bytes) -> None:
    codec, _, limit = CODECS[name]
    assert len(frame) <= limit
    with pytest.raises(ProtocolError):
        codec.decode(frame)


def test_text_with_a_lone_surrogate_is_malformed() -> None:
    with pytest.raises(ProtocolError) as info:
        m.DEVICE_TO_SERVER.decode('{"type":"hello","agent_version":"\ud800"}')
    assert info.value.reason == "malformed"


# ----------------------------------------------------------------- command actions


def test_command_kinds_match_the_action_union() -> None:
    union = typing.get_args(m.CommandAction)
    assert tuple(tag(t) for t in union) == m.COMMAND_KINDS
    assert len(set(m.COMMAND_KINDS)) == len(m.COMMAND_KINDS)
    assert set(m.COMMAND_KINDS) == {
        "ping", "diagnostics", "logs", "restart-ui", "reboot", "assign", "set-config", "wipe", "schedule",
        "update",
        "screenshot", "test-ring",
    }
    assert set(union) == set(ACTION_STRATEGIES)


@pytest.mark.parametrize("kind", m.COMMAND_KINDS)
def test_every_kind_converts_and_names_its_command(kind: str) -> None:
    required: dict[str, dict[str, Any]] = {"assign": {"citizen_name": "A"}, "set-config": {"settings": {}},
                                         "schedule": {"visits": []}, "update": {"release": "r", "path": "/b"}}
    action: Any = m.convert({"type": kind, **required.get(kind, {})}, m.CommandAction)
    assert tag(type(action)) == kind
    command = m.Command(id="c", device_id="d", issued_at=0.0, expires_at=1.0, action=action)
    assert command.kind == kind
    assert m.COMMAND.decode(m.encode(command)) == command


@FAST
@given(actions)
def test_convert_round_trips_every_action(action: Any) -> None:
    assert m.convert(m.to_builtins(action), m.CommandAction) == action


def test_convert_examples() -> None:
    assert m.convert({"type": "logs", "lines": 5}, m.CommandAction) == m.Logs(lines=5)
    assert m.convert({"type": "logs"}, m.CommandAction) == m.Logs(lines=200)
    assert m.convert({"type": "assign", "citizen_name": "Grethe", "contact_staff": ["Anne"]}, m.CommandAction) == (
        m.Assign(citizen_name="Grethe", contact_staff=["Anne"])
    )
    assert m.convert({"type": "set-config", "settings": {"volume": 7, "dark": True}}, m.CommandAction) == (
        m.SetConfig(settings={"volume": 7, "dark": True})
    )
    # Lax mode is for CLI arguments, which arrive as strings.
    assert m.convert({"type": "logs", "lines": "50"}, m.CommandAction, strict=False) == m.Logs(lines=50)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"type": "format-disk"}, "unknown-type"),
        ({}, "unknown-type"),
        ({"type": "logs", "lines": "50"}, "invalid"),
        ({"type": "logs", "lines": 5, "extra": 1}, "invalid"),
        ({"type": "assign"}, "invalid"),
        ({"type": "assign", "citizen_name": 7}, "invalid"),
        ({"type": "set-config", "settings": {"a": {"nested": 1}}}, "invalid"),
        ({"type": 3}, "invalid"),
        ([], "invalid"),
        ("ping", "invalid"),
        (None, "invalid"),
    ],
)
def test_convert_refusals(value: Any, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        m.convert(value, m.CommandAction)
    assert info.value.reason == reason


@FAST
@given(json_values | st.dictionaries(st.just("type") | text, json_values, max_size=4))
def test_convert_random_values_gives_only_protocol_errors(value: Any) -> None:
    assert_protocol_error_or_value(lambda: m.convert(value, m.CommandAction))


# ------------------------------------------------------------------- call signaling


def test_relayed_call_messages_fit_both_hops() -> None:
    # The agent passes these on unchanged, so each must decode on both sides of it.
    for struct_type in m.CALL_UPSTREAM:
        assert struct_type in typing.get_args(m.UiToAgent)
        assert struct_type in typing.get_args(m.DeviceToServer)
    for downstream in m.CALL_DOWNSTREAM:
        assert downstream in typing.get_args(m.ServerToDevice)
        assert downstream in typing.get_args(m.AgentToUi)


@pytest.mark.parametrize("name", ["UI_TO_AGENT", "DEVICE_TO_SERVER", "STAFF_TO_SERVER"])
def test_sdp_length_limit(name: str) -> None:
    codec = CODECS[name][0]
    line = "a=candidate:1 1 udp 2122260223 192.168.1.20 54321 typ host generation 0\r\n"
    sdp = (line * (m.MAX_SDP_CHARS // len(line) + 1))[: m.MAX_SDP_CHARS]
    message_type: Any = m.CallAccept if name == "STAFF_TO_SERVER" else m.CallAnswer
    message = message_type(call_id="c", sdp=sdp)
    assert codec.decode(m.encode(message)) == message  # a realistic SDP of the largest allowed size fits the frame
    too_long = m.encode(message_type(call_id="c", sdp=sdp + "x"))
    with pytest.raises(ProtocolError) as info:
        codec.decode(too_long)
    assert info.value.reason == "invalid"


def test_hang_up_reason_is_a_closed_set() -> None:
    assert m.DEVICE_TO_SERVER.decode(b'{"type":"call-hangup","call_id":"c"}') == m.CallHangUp(call_id="c")
    with pytest.raises(ProtocolError) as info:
        m.DEVICE_TO_SERVER.decode(b'{"type":"call-hangup","call_id":"c","reason":"bored"}')
    assert info.value.reason == "invalid"
