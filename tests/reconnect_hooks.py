"""Worker hooks for tests/e2e/test_reconnect.py; each leaves a trace in a file the test names."""
from __future__ import annotations

import os

# The file the hooks append to; unset means the hook does nothing.
RECONNECT_LOG_ENV = "BB_TEST_RECONNECT_LOG"


def record_reconnect(queue: str, index: int) -> None:
    """``on_reconnect``: append ``pid queue index`` to the file named by the env var."""
    path = os.environ.get(RECONNECT_LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {queue} {index}\n")
