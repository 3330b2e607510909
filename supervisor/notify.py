"""systemd readiness (``Type=notify``): one datagram to ``$NOTIFY_SOCKET``.

Written here rather than pulling in a dependency: the protocol is a single
``sendto`` of ``READY=1`` (sd_notify(3)); abstract sockets start with '@'.
"""
from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``READY=1``); False when not run by systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            return False
    return True
