"""The master loop: sleep until a signal, reap, refill slots, step in for stuck children.

Single-threaded; holds no beanstalkd socket, ever (rule 1). It sleeps in
``select`` on the signal pipe (SIGCHLD included) and the control socket,
with a timeout that is the next thing it must do, so it neither blocks nor
busy-polls (rule 3). Signals only queue work; everything happens here.
"""
from __future__ import annotations

import enum
import logging
import os
import signal
import time
from typing import Any, Callable

from supervisor import (backoff, control, logconfig, notify, pidfile, report, signals,
                        titles, watchdog)
from supervisor.children import EXIT_RECYCLE, Child, ChildSetup, spawn
from supervisor.config import Config, ConfigError, import_jobs, load, resolve_hook
from supervisor.pool import Pool, Slot, max_jobs_with_jitter
from workers import policy
from workers.connection import parse_url
from workers.runner import WorkerSpec
from workers.scoreboard import CrashTable, WorkerState

log = logging.getLogger(__name__)

TICK = 1.0  # longest sleep: heartbeats, RSS and readiness need no finer grain
# Forks per loop turn: a big scale-up still reaps, reads signals and answers
# the control socket between batches.
SPAWN_BATCH = 16


class State(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"
    EXITED = "exited"


class ExitCode(enum.IntEnum):
    OK = 0
    ABNORMAL = 1  # every queue failing, or the master could not start
    USAGE = 2     # usage or config error (documented in the README)


class Arbiter:
    """Owns the pool: which slots exist, which child fills each, and why."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pool = Pool(config)
        self.state = State.RUNNING
        self.children: dict[int, Child] = {}
        self.brake = backoff.CrashBrake()
        self.more_to_spawn = False
        self.drain_deadline = 0.0
        self.exit_code = ExitCode.OK
        self.crashes = CrashTable()
        self.throttle = watchdog.Throttle()
        self.started_at = time.monotonic()
        self.ready_notified = False
        self.sigq: signals.SignalQueue | None = None
        self.server: control.ControlServer | None = None
        self.setups = self.child_setups(config)
        self.dispatch: dict[int, Callable[[], None]] = {
            signal.SIGTERM: self.stop_graceful, signal.SIGINT: self.stop_graceful,
            signal.SIGQUIT: self.stop_now, signal.SIGCHLD: lambda: None,
            signal.SIGHUP: self.reload, signal.SIGUSR1: self.reopen_logs,
            signal.SIGUSR2: lambda: log.info("SIGUSR2 received; ignored"),
            signal.SIGTTIN: lambda: self.scale_by_signal("+1"),
            signal.SIGTTOU: lambda: self.scale_by_signal("-1"),
        }

    @staticmethod
    def child_setups(config: Config) -> dict[str, ChildSetup]:
        """Per queue, resolve the worker hooks; raises ConfigError naming a bad one."""
        address = parse_url(config["beanstalk_url"])
        setups = {}
        for name, queue in config.queues.items():
            hook = {k: resolve_hook(config, queue[k], f"[queue:{name}] {k}"
                                    if queue[k] != config[k] else f"[supervisor] {k}")
                    for k in ("post_fork", "worker_exit", "on_reconnect")}
            setups[name] = ChildSetup(address=address, user=config["user"],
                                      group=config["group"], **hook)
        return setups

    @property
    def address(self) -> tuple[str, int]:
        return parse_url(self.config["beanstalk_url"])

    # -- the loop ----------------------------------------------------------
    def run(self) -> int:
        try:
            self.start()
        except (OSError, pidfile.PidfileError) as exc:
            log.error("cannot start: %s", exc)
            return ExitCode.ABNORMAL
        try:
            while self.state is not State.EXITED:
                self.step()
        except Exception:  # noqa: BLE001 - process boundary: never leave orphans
            log.exception("master failed; killing every worker")
            self.exit_code = ExitCode.ABNORMAL
            self.kill_and_reap_all()
        finally:
            self.shut()
        log.info("master exiting with code %d", self.exit_code)
        return int(self.exit_code)

    def start(self) -> None:
        self.sigq = signals.SignalQueue()
        if self.config["pidfile"]:
            pidfile.write(self.config["pidfile"])
        self.server = self.open_control_socket()
        log.info("master started: %d queues, %d workers, beanstalkd at %s:%d, config %s",
                 len(self.pool.counts), self.pool.total(), *self.address,
                 self.config.path)
        self.update_title()

    def open_control_socket(self) -> control.ControlServer | None:
        """The socket for status/ctl. A second master on the same socket is refused;
        any other failure only costs status/ctl, so the pool runs without it."""
        path = control.socket_path(self.config)
        try:
            return control.ControlServer(path, self.handle)
        except control.SocketInUse:
            raise
        except OSError as exc:
            log.warning("no control socket at %s (%s): `status` and `ctl` will not reach "
                        "this master; signals still work", path, exc)
            return None

    def step(self) -> None:
        """One turn of the loop."""
        assert self.sigq is not None
        self.reap_children()
        self.reconcile()
        self.watch()
        self.check_ready()
        if self.state is State.EXITED:
            return
        fds = [self.server.fileno()] if self.server is not None else []
        sigs, ready = self.sigq.wait(self.sleep_time(), fds)
        for signum in sigs:
            self.dispatch[signum]()
        if ready and self.server is not None:
            self.server.serve_ready()

    def shut(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.config["pidfile"]:
            pidfile.remove(self.config["pidfile"])

    def sleep_time(self) -> float:
        if self.more_to_spawn:
            return 0.0
        now = time.monotonic()
        wake = [now + TICK, *self.brake.not_before.values()]
        if self.state is State.DRAINING:
            wake.append(self.drain_deadline)
        hung_at = watchdog.next_deadline(self.children.values())
        if hung_at is not None:
            wake.append(hung_at)
        return max(0.0, min(wake) - now)

    # -- operator actions --------------------------------------------------
    def stop_graceful(self) -> None:
        if self.state is not State.RUNNING:
            log.info("second stop signal: stopping now")
            return self.stop_now()
        timeout = float(self.config["graceful_timeout"])
        log.info("graceful stop: draining %d workers (graceful_timeout %.0f s)",
                 len(self.children), timeout)
        self.state = State.DRAINING
        self.drain_deadline = time.monotonic() + timeout
        notify.notify("STOPPING=1")
        for child in self.children.values():
            child.stop("drain")
        self.update_title()

    def stop_now(self) -> None:
        log.info("stopping now: killing %d workers", len(self.children))
        self.state = State.STOPPING
        for child in self.children.values():
            child.kill_group("stop")
        self.update_title()

    def reload(self) -> None:
        """SIGHUP: adopt a valid new config; a bad one is rejected, the old one kept."""
        if self.state is not State.RUNNING:
            return
        try:
            new = load(self.config.path)
            setups = self.child_setups(new)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running config: %s", exc)
            return
        if new["imports"] != self.config["imports"]:
            try:
                import_jobs(new)  # new modules load now; loaded ones are not re-imported
            except ConfigError as exc:
                log.error("reload rejected, keeping the running config: %s", exc)
                return
            log.warning("reload: `imports` changed: new modules are loaded, but the code of "
                        "modules already loaded changes only with a restart of the master")
        changes = self.pool.reload(new)
        self.config, self.setups = new, setups
        policy.use(policy.from_config(new))
        logconfig.set_level(new["log_level"])
        log.info("reloaded %s: %s", new.path, "; ".join(changes) or "no change")
        self.update_title()

    def reopen_logs(self) -> None:
        logconfig.reopen()
        for child in self.children.values():
            child.send(signal.SIGUSR1)
        log.info("log files reopened")

    def scale_by_signal(self, change: str) -> None:
        try:
            self.scale(None, change)
        except ValueError:
            pass  # already logged; a signal has nobody to answer

    def kill_and_reap_all(self) -> None:
        for child in self.children.values():
            child.kill_group("master failed")
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.children.pop(pid).state.close()

    def scale(self, queue: str | None, change: str) -> str:
        try:
            done = self.pool.scale(queue, change)
        except ValueError as exc:
            log.warning("scale refused: %s", exc)
            raise
        finally:
            self.update_title()
        log.info("scale: %s", done)
        return done

    # -- children ----------------------------------------------------------
    def reap_children(self) -> None:
        """``waitpid(-1, WNOHANG)`` until nothing is left; unknown pids reaped quietly."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self.child_exited(child, status)

    def child_exited(self, child: Child, status: int) -> None:
        snap = child.state.read()
        child.state.close()
        held = snap.job_id if snap.state is WorkerState.BUSY else 0
        how = backoff.describe_status(status)
        where = f"worker {child.slot} pid={child.pid}"
        if held:
            # Died mid-job, whatever its status (a job may os._exit(0)):
            # the next reservation of the job counts this attempt.
            self.crashes.add(held)
            how += f" while busy with job id={held}"
        if child.killed:
            log.warning("%s %s (killed: %s)", where, how, child.killed)
        elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_RECYCLE:
            log.info("%s recycled after %d jobs (max_jobs_per_child)", where, snap.jobs_done)
        elif backoff.is_clean(status) and not held:
            log.info("%s %s%s", where, how, f" ({child.stop_reason})" if child.stop_reason else "")
        else:
            log.error("%s %s", where, how)
            self.record_failure(child.slot)

    def record_failure(self, slot: Slot) -> None:
        if self.brake.record(slot, time.monotonic()):
            self.update_title()
            self.check_all_failing()

    def check_all_failing(self) -> None:
        active = {q for q, n in self.pool.counts.items() if n > 0}
        if active and active <= self.brake.failing and self.state is State.RUNNING:
            log.error("every queue is failing (%s): stopping", ", ".join(sorted(active)))
            self.exit_code = ExitCode.ABNORMAL
            self.stop_graceful()

    def reconcile(self) -> None:
        """Refill empty slots, stop surplus children, roll reloaded queues."""
        self.more_to_spawn = False
        if self.state is not State.RUNNING:
            if not self.children:
                self.state = State.EXITED
            return
        wanted = set(self.pool.wanted())
        filled = {c.slot for c in self.children.values()}
        for child in list(self.children.values()):
            if child.slot not in wanted:
                child.stop("surplus")
        now = time.monotonic()
        spawned = 0
        for slot in sorted(wanted - filled):
            if spawned >= SPAWN_BATCH:
                self.more_to_spawn = True  # the loop comes back at once
                break
            if self.brake.may_start(slot, now):
                self.spawn_child(slot)
                spawned += 1
        self.roll_generations()
        self.forget_recovered(now)

    def roll_generations(self) -> None:
        """After a reload, replace a queue's old children one at a time."""
        for queue, generation in self.pool.generation.items():
            mine = [c for c in self.children.values() if c.slot.queue == queue]
            if any(c.stopping for c in mine):
                continue
            if any(c.state.read().state in (WorkerState.STARTING, WorkerState.CONNECTING)
                   for c in mine):
                continue
            old = [c for c in mine if c.generation < generation]
            if old:
                min(old, key=lambda c: c.slot).stop("reload")

    def forget_recovered(self, now: float) -> None:
        if self.brake.failing and self.brake.recovered(now):
            self.update_title()

    def spawn_child(self, slot: Slot) -> None:
        queue = self.pool.queue(slot.queue)
        setup = self.setups[slot.queue]
        spec = WorkerSpec(queue=slot.queue, tube=queue.tube, index=slot.index,
                          address=setup.address,
                          max_jobs=max_jobs_with_jitter(queue["max_jobs_per_child"]),
                          reply_timeout=self.config["socket_timeout"],
                          on_reconnect=setup.on_reconnect)
        assert self.sigq is not None
        child = spawn(spec, self.sigq, self.crashes, setup,
                      generation=self.pool.generation[slot.queue],
                      close_fds=(self.server.fileno(),) if self.server is not None else ())
        self.children[child.pid] = child
        log.info("spawned worker %s pid=%d", slot, child.pid)

    def watch(self) -> None:
        """Kill hung children; recycle oversized ones; end an overdue drain."""
        now = time.monotonic()
        for verdict in watchdog.hung(self.children.values(), now, self.config["socket_timeout"]):
            log.error("worker %s pid=%d %s: killing its process group",
                      verdict.child.slot, verdict.child.pid, verdict.reason)
            snap = verdict.child.state.read()
            if snap.state is WorkerState.BUSY and snap.job_id:
                # Before the kill: its socket closes at once and an idle
                # sibling may reserve the job before this child is reaped.
                self.crashes.add(snap.job_id)
            verdict.child.kill_group(verdict.reason)
        if self.state is State.RUNNING and self.throttle.due(now):
            limits = {q: self.pool.queue(q)["max_memory_per_child"] for q in self.pool.counts}
            for verdict in watchdog.oversized(self.children.values(), limits):
                log.warning("worker %s pid=%d %s", verdict.child.slot, verdict.child.pid,
                            verdict.reason)
                verdict.child.stop("memory")
        if self.throttle.due(now, "nudge"):
            self.nudge_stopping(now)
        if self.state is State.DRAINING and now >= self.drain_deadline:
            log.warning("graceful_timeout expired: killing %d workers still busy",
                        len(self.children))
            self.stop_now()

    def nudge_stopping(self, now: float) -> None:
        """TERM again, once a second, a child asked to stop that sits idle: a
        job may have swallowed the first TERM with a handler of its own."""
        for child in self.children.values():
            if child.stop_reason and not child.killed and now - child.stop_sent > 1.0:
                state = child.state.read().state
                if state in (WorkerState.IDLE, WorkerState.CONNECTING):
                    child.stop_sent = now
                    child.send(signal.SIGTERM)

    def check_ready(self) -> None:
        """Tell systemd READY=1 once every slot has a connected child."""
        if self.ready_notified or self.state is not State.RUNNING:
            return
        states = [c.state.read().state for c in self.children.values()]
        if len(states) >= self.pool.total() and all(
                s in (WorkerState.IDLE, WorkerState.BUSY) for s in states):
            self.ready_notified = True
            notify.notify("READY=1")
            log.info("all %d workers connected", len(states))

    def update_title(self) -> None:
        state = self.state.value
        if self.brake.failing:
            state += " failing: " + ",".join(sorted(self.brake.failing))
        titles.set_title(titles.master(self.config.path, state, len(self.pool.counts),
                                       self.pool.total()))

    # -- control socket ----------------------------------------------------
    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.sigq is not None
        for signum in self.sigq.take():  # a signal sent just before this request
            self.dispatch[signum]()
        cmd = request.get("cmd")
        try:
            if cmd == "status":
                return {"ok": True, **self.status()}
            if cmd in ("reload", "scale") and self.state is not State.RUNNING:
                return {"ok": False, "error": f"master is {self.state.value}: {cmd} refused"}
            if cmd == "reload":
                self.reload()
                return {"ok": True, "done": "reload requested"}
            if cmd == "stop":
                self.stop_graceful()
                return {"ok": True, "done": "graceful stop started"}
            if cmd == "scale":
                return {"ok": True, "done": self.scale(request.get("queue"),
                                                       str(request.get("change", "")))}
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def status(self) -> dict[str, Any]:
        return report.pool_status(self.config, self.state.value, self.started_at,
                                  sorted(self.brake.failing), self.pool, self.children.values())
