"""What the HTTP server logs about requests it could not even parse.

aiohttp logs a malformed request (a NUL byte in a header, a broken request line) as a
full traceback at ERROR, so any client that can reach a port can fill the log. Such a
request is the client's fault, not ours: it becomes one WARNING line, without the
traceback and at most one every ``interval`` seconds (with a count of those left
out). Errors in our own handlers keep their traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError


class RequestLog(logging.LoggerAdapter[logging.Logger]):
    """The ``logger=`` of an aiohttp server: malformed requests as rate-limited warnings."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(logger, {})
        self.interval, self.clock = interval, clock
        self._next_at = float("-inf")
        self._left_out = 0

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.malformed(exc_info)
        else:
            self.logger.error(msg, *args, exc_info=exc_info, **kwargs)

    def malformed(self, exc: HttpProcessingError) -> None:
        now = self.clock()
        if now < self._next_at:
            self._left_out += 1
            return
        self._next_at = now + self.interval
        left_out, self._left_out = self._left_out, 0
        more = f" ({left_out} more since the last line)" if left_out else ""
        # the first line only, escaped: the rest quotes the offending bytes, which the client chose
        reason = ascii(exc.message.splitlines()[0][:80]) if exc.message else type(exc).__name__
        self.logger.warning("malformed HTTP request refused with %d: %s%s", exc.code, reason, more)
