"""``bbsupervise status`` and ``bbsupervise ctl``: the operator's side of the control socket.

Both find the running master through the control socket derived from the
config (``control.socket_path``); ``status`` adds the tube counts from
beanstalkd with a short-lived connection of its own.
"""
from __future__ import annotations

import json
import time
from typing import Any

from supervisor import control
from supervisor.config import Config
import greenstalk

from workers import connection

TUBE_KEYS = ("current-jobs-ready", "current-jobs-reserved", "current-jobs-delayed",
             "current-jobs-buried")


class NotRunning(Exception):
    """No master answers on the control socket of this config."""


def ask(config: Config, payload: dict[str, Any]) -> dict[str, Any]:
    path = control.socket_path(config)
    try:
        return control.request(path, payload)
    except (FileNotFoundError, ConnectionRefusedError):
        raise NotRunning(f"no bbsupervise master is running for {config.path} "
                         f"(no answer on {path})") from None


def tube_counts(config: Config, tubes: dict[str, str]) -> dict[str, Any]:
    """Per queue: ready, reserved, delayed and buried counts from beanstalkd."""
    try:
        client = connection.open_client(connection.parse_url(config["beanstalk_url"]),
                                        reply_timeout=3.0)
    except OSError as exc:
        return {"error": f"beanstalkd unreachable: {exc}"}
    counts: dict[str, Any] = {}
    try:
        for queue, tube in tubes.items():
            stats: dict[str, Any]
            try:
                stats = dict(client.stats_tube(tube))
            except greenstalk.NotFoundError:  # the tube is empty and unused
                stats = {}
            counts[queue] = {k.removeprefix("current-jobs-"): int(stats.get(k, 0))
                             for k in TUBE_KEYS}
    finally:
        connection.close_quietly(client)
    return counts


def status(config: Config, as_json: bool) -> str:
    reply = ask(config, {"cmd": "status"})
    reply["tubes"] = tube_counts(config, {q: v["tube"] for q, v in reply["queues"].items()})
    return json.dumps(reply, indent=2) if as_json else render(reply)


def render(reply: dict[str, Any]) -> str:
    m = reply["master"]
    lines = [f"master pid {m['pid']} {m['state']}, up {_age(m['uptime'])}, "
             f"rss {m['rss'] / 2**20:.1f} MiB, config {m['config']}"]
    if m["failing"]:
        lines.append(f"FAILING queues: {', '.join(m['failing'])}")
    lines.append(f"{'queue':<20} {'slot':>4} {'pid':>7} {'state':<24} {'jobs':>7} "
                 f"{'rss MiB':>8} {'uptime':>8}")
    for c in reply["children"]:
        state = c["state"]
        if c["job_id"]:
            state += f" job {c['job_id']} {c['busy_seconds']:.1f}s"
        lines.append(f"{c['queue']:<20} {c['slot']:>4} {c['pid']:>7} {state:<24} "
                     f"{c['jobs_done']:>7} {c['rss'] / 2**20:>8.1f} {_age(c['uptime']):>8}")
    tubes = reply["tubes"]
    if "error" in tubes:
        lines.append(tubes["error"])
    else:
        lines.append(f"{'queue':<20} {'ready':>8} {'reserved':>8} {'delayed':>8} {'buried':>8}")
        for q, t in tubes.items():
            lines.append(f"{q:<20} {t['ready']:>8} {t['reserved']:>8} {t['delayed']:>8} "
                         f"{t['buried']:>8}")
    return "\n".join(lines)


def _age(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400 \
        else f"{seconds / 86400:.1f}d"


def ctl(config: Config, words: list[str]) -> str:
    """``reload``, ``stop`` or ``scale QUEUE +N|-N|N``; raises ValueError for bad words."""
    if words in (["reload"], ["stop"]):
        payload: dict[str, Any] = {"cmd": words[0]}
    elif len(words) == 3 and words[0] == "scale":
        payload = {"cmd": "scale", "queue": words[1], "change": words[2]}
    elif len(words) == 2 and words[0] == "scale":
        payload = {"cmd": "scale", "queue": None, "change": words[1]}
    else:
        raise ValueError("expected: reload | stop | scale [QUEUE] +N|-N|N")
    reply = ask(config, payload)
    if not reply.get("ok"):
        raise ValueError(reply.get("error", "refused"))
    return str(reply.get("done", "ok"))
