"""A TCP proxy on loopback that loses exactly one answer: the server's answer to enrollment.

It cannot read TLS, but it can read TLS's record headers. The first application-data
record from the unit big enough to hold a certificate request is the enrollment
request; from then on, on that connection, every byte the server sends is dropped,
and when the server has sent its whole answer and closed (so it has certainly
committed), the unit's connection is reset. Every other connection, before and
after, is relayed untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading

APPLICATION_DATA = 0x17
#: Larger than a GET or the TLS handshake's last records; smaller than a request with a CSR.
REQUEST_RECORD_MIN = 400


class LosingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.answers_lost = 0
        self._armed = True
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> LosingProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _connection(self, unit_reader: asyncio.StreamReader, unit_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            unit_writer.close()
            return
        losing = asyncio.Event()  # set once this connection carried the enrollment request
        await asyncio.gather(self._upstream(unit_reader, server_writer, losing),
                             self._downstream(server_reader, unit_writer, losing))

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        losing: asyncio.Event) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                buffer += data
                while len(buffer) >= 5:  # whole TLS records: type (1), version (2), length (2)
                    kind, length = buffer[0], struct.unpack(">H", buffer[3:5])[0]
                    if len(buffer) < 5 + length:
                        break
                    if self._armed and kind == APPLICATION_DATA and length >= REQUEST_RECORD_MIN:
                        self._armed = False
                        losing.set()  # before the request leaves: nothing of the answer gets through
                    buffer = buffer[5 + length:]
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          losing: asyncio.Event) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if losing.is_set():
                    continue  # the answer, lost on the way
                writer.write(data)
                await writer.drain()
        if losing.is_set():  # the server answered in full and closed: now the unit learns nothing
            self.answers_lost += 1
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            writer.close()
