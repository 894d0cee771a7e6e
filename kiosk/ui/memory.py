"""The screen's memory between calls, with glibc's allocator.

Each call starts its own capture, encoder and decoder threads; glibc gives a thread that
allocates an arena of its own (up to eight per core) and keeps what was freed there for
that arena's next use. Over many calls the screen's idle memory crept from 65 MB to 132 MB
after 30 calls (``bench/calls.py``, docs/benchmarks.md "Memory grows with each call").
Two arenas, and the freed pages handed back once a call is over, keep it where it started.
Elsewhere than glibc (musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from typing import Final

log = logging.getLogger(__name__)

#: mallopt's parameter number for the arena limit (glibc's malloc.h: M_ARENA_MAX).
_M_ARENA_MAX: Final = -8
_libc = ctypes.CDLL(None) if platform.libc_ver()[0] == "glibc" else None


def limit_arenas(count: int = 2) -> None:
    """At most ``count`` malloc arenas: called first thing, before any thread starts."""
    if _libc is not None and not _libc.mallopt(_M_ARENA_MAX, count):
        log.warning("glibc refused an arena limit of %d", count)


def give_back() -> None:
    """Hand the pages a finished call freed back to the system (malloc_trim(0))."""
    if _libc is not None:
        _libc.malloc_trim(0)
