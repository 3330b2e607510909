"""The control socket's framing: big replies pass, big requests do not."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from supervisor import control


def serve_once(server: control.ControlServer) -> threading.Thread:
    def run() -> None:
        import select

        select.select([server.fileno()], [], [], 5)
        server.serve_ready()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_status_for_thousands_of_workers_fits_in_a_reply(tmp_path: Path) -> None:
    # Given a master whose status is several MiB (a pool of 1,000s of workers)
    children = [{"queue": "q", "slot": i, "pid": 10_000 + i, "state": "idle" * 100}
                for i in range(5_000)]

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "children": children}

    server = control.ControlServer(str(tmp_path / "ctl.sock"), handle)
    try:
        thread = serve_once(server)
        # When a client asks, Then the whole reply arrives
        reply = control.request(server.path, {"cmd": "status"})
        thread.join(5)
        assert len(reply["children"]) == 5_000
    finally:
        server.close()


def test_an_oversized_request_is_refused(tmp_path: Path) -> None:
    server = control.ControlServer(str(tmp_path / "ctl.sock"), lambda r: {"ok": True})
    try:
        thread = serve_once(server)
        reply = control.request(server.path, {"cmd": "x" * (control.MAX_REQUEST + 10)})
        thread.join(5)
        assert reply["ok"] is False and "too long" in reply["error"]
    finally:
        server.close()


def test_a_second_server_on_a_live_socket_is_refused(tmp_path: Path) -> None:
    server = control.ControlServer(str(tmp_path / "ctl.sock"), lambda r: {"ok": True})
    try:
        with pytest.raises(control.SocketInUse):
            control.ControlServer(server.path, lambda r: {"ok": True})
    finally:
        server.close()
