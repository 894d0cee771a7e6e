"""Where the agent's local socket is: the agent listens there, the screen connects.

Both processes import it from here, so the unprivileged screen never imports
the agent's state directory (``kiosk.provision.state``, which holds the key
vault) just to find the socket. The lines spoken on it are in
``kiosk.protocol.messages`` (``UiToAgent``, ``AgentToUi``; see docs/ui-socket.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["SOCKET_NAME", "socket_path"]

#: The socket's name inside the agent's state directory.
SOCKET_NAME: Final = "agent.sock"


def socket_path(state_dir: Path) -> Path:
    """The agent's socket for the agent whose state directory is ``state_dir``."""
    return state_dir / SOCKET_NAME
