"""The staff browser's WebSocket for calls (console port, logged-in people only).

One socket carries one call at a time: call-start from the browser (or call-resume, to
take up a call in progress after the socket dropped), then the relay of SDP and the end
of the call. Bad frames get a ``rejected`` reply and the socket stays.
"""

from __future__ import annotations

import logging

from aiohttp import WSMsgType, web

from kiosk.protocol import messages as m
from kiosk.protocol.errors import ProtocolError
from kiosk.server.calls import Caller, CallNotPlaced
from kiosk.server.console_api import USER, route
from kiosk.server.device_api import CALLS, error

log = logging.getLogger("kiosk.server.staff")


@route("GET", "/api/calls/socket", "calls.make", "WebSocket for placing calls (see kiosk.protocol.messages); "
       "answers 101 to a WebSocket upgrade from this console's own pages", status=101, websocket=True)
async def staff_socket(request: web.Request) -> web.StreamResponse:
    user = request[USER]
    calls = request.app[CALLS]
    caller = Caller(user.username, user.display_name or user.username, user.role)
    ws = web.WebSocketResponse(max_msg_size=1024 * 1024, heartbeat=30)
    if not ws.can_prepare(request).ok:
        refusal = error(426, "websocket-required", "this address takes a WebSocket upgrade only")
        refusal.headers["Upgrade"] = "websocket"
        return refusal
    await ws.prepare(request)

    async def send(message: m.ServerToStaff) -> None:
        if ws.closed:
            raise ConnectionError("staff socket closed")
        await ws.send_str(m.encode(message).decode())

    current: str | None = None
    try:
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            try:
                message = m.STAFF_TO_SERVER.decode(frame.data)
            except ProtocolError as exc:
                await send(m.Rejected(reason=exc.reason, detail=exc.detail[:300]))
                continue
            if isinstance(message, m.CallStart):
                if current is not None and current in calls.live:
                    await send(m.Rejected(reason="busy", detail="this page is already in a call"))
                    continue
                try:
                    current = await calls.place(caller, message.citizen_id, send)
                except CallNotPlaced as exc:
                    await send(m.Rejected(reason=exc.code, detail=str(exc)))
            elif isinstance(message, m.CallResume):  # our socket dropped (a server restart); media went on
                if await calls.resume(caller, message.call_id, send):
                    current = message.call_id
            else:
                await calls.from_staff(user.username, message)
    finally:
        if current is not None:
            await calls.staff_gone(current, send)  # closing the page hangs up
    return ws


