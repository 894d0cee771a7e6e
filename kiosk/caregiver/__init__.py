"""A caregiver's call client in Python: what the console page does for a call, without a browser.

It speaks exactly what ``kiosk/server/static/caregiver.js`` speaks to the server:
log in (``POST /api/login``, session cookie), open the call socket
(``/api/calls/socket``), send :class:`~kiosk.protocol.messages.CallStart`, and
answer the unit's SDP offer (the :class:`~kiosk.protocol.messages.CallOffer` sent while
it rings, so the connection is up before the citizen answers; or the offer in the
:class:`~kiosk.protocol.messages.CallAnswer` of a unit that did not pre-connect) with
the same call peer the unit uses (:class:`kiosk.media.peer.CallPeer`), SDP whole, no
trickle; its camera and microphone are attached when the citizen answers.

Why it exists: ``make demo`` can drive a real call where no browser is at hand,
the call benchmark (``bench/calls.py``) needs a caller whose every step it can
time, and end-to-end tests need a caregiver that counts what it receives. Its
media are ``lavfi`` test sources (:mod:`kiosk.caregiver.media`), so it runs on
any machine with PyAV.

The peer is configured with the ICE servers the server sent in
:class:`~kiosk.protocol.messages.CallPlaced` and nothing else (an empty list
stays empty: aiortc would otherwise ask a public STUN server), and
``relay_only`` becomes the ``relay`` ICE transport policy, as on the page.

Every step is timed on :func:`time.monotonic` (system-wide on Linux, so other
local processes' timestamps compare) when the message is *received* by the
socket reader, not when someone gets round to awaiting it. At the end it sends
the call's quality report (numbers only) as the page does. Logs carry call ids,
steps and reasons only: never the citizen's name (which
:class:`~kiosk.protocol.messages.CallPlaced` carries), SDP or credentials.

    async with CaregiverClient("http://127.0.0.1:8080") as anne:
        await anne.login("anne", password)
        result = await anne.call(citizen_id, talk_seconds=5)

or, one call from a shell (the password on stdin)::

    python -m kiosk.caregiver --console URL --user anne --citizen ID --password-stdin

Modules: ``client`` (login, the call socket), ``call`` (one call, mirrored
with the shared call state machine), ``media`` (test sources), ``errors``.
"""

from .call import CallResult, CallTimes, StaffCall
from .client import CaregiverClient
from .errors import CallEndedEarly, CallError, CallRejected, CallTimeout, LoginFailed
from .media import TestMedia, open_test_media

__all__ = [
    "CallEndedEarly",
    "CallError",
    "CallRejected",
    "CallResult",
    "CallTimeout",
    "CallTimes",
    "CaregiverClient",
    "LoginFailed",
    "StaffCall",
    "TestMedia",
    "open_test_media",
]
