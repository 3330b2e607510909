"""Helpers shared by the test suite.

Everything here exists so that tests can drive real processes (beanstalkd and
the bbsupervise master with its forked children) without fixed sleeps and
without leaving strays behind: every wait polls a predicate with a deadline,
every process is started in its own session and killed at teardown.
The pytest fixtures that wrap these classes live in tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import greenstalk
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
TUBE_NAMESPACE = "backburner.worker.queue"
# The marker a worker puts in its title once it is connected and waiting.
IDLE_MARKER = " idle"

T = TypeVar("T")
Client = greenstalk.Client  # bodies are bytes: every client here uses encoding=None
Addr = tuple[Any, ...]  # (ip, port), or () for a listening socket's raddr


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str | Callable[[], str] = "",
) -> T:
    """Poll `predicate` until it returns something truthy and return that value.

    This is the only way tests wait: a fixed sleep is either too short on a
    loaded CI machine or wastes time everywhere else. `message` may be a
    callable so that the failure text can show the state at the deadline
    (for example the last lines a process printed).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s: {text or predicate}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# beanstalkd


def _zero_tube_stats(tube: str) -> dict[str, Any]:
    """What stats-tube would say about an empty tube: beanstalkd deletes a
    tube once nothing is in it or watching it, so NOT_FOUND means zeros."""
    keys = (
        "current-jobs-urgent current-jobs-ready current-jobs-reserved "
        "current-jobs-delayed current-jobs-buried total-jobs current-using "
        "current-waiting current-watching pause cmd-delete cmd-pause-tube "
        "pause-time-left"
    ).split()
    return {"name": tube, **dict.fromkeys(keys, 0)}


class Beanstalkd:
    """One beanstalkd process on 127.0.0.1, owned by a test.

    Started with `-p 0` so the kernel picks a free port (never the Debian
    default 11300); the port is then read back from the process's listening
    socket. `restart()` starts a new process on the same port and binlog
    directory, which is how tests simulate a server crash or upgrade.
    """

    host = LOOPBACK

    def __init__(self, workdir: Path, binlog_dir: Path | None = None, port: int | None = None) -> None:
        self.workdir = workdir
        self.binlog_dir = binlog_dir
        self.port = port or 0
        self.log_path = workdir / "beanstalkd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._clients: list[Client[bytes]] = []
        workdir.mkdir(parents=True, exist_ok=True)
        self.start()

    @property
    def pid(self) -> int:
        assert self._proc is not None, "beanstalkd is not running"
        return self._proc.pid

    @property
    def url(self) -> str:
        return f"beanstalk://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server (on `self.port` if one is known) and wait until it listens."""
        assert not self.running, "beanstalkd is already running"
        cmd = ["beanstalkd", "-l", self.host, "-p", str(self.port)]
        if self.binlog_dir is not None:
            self.binlog_dir.mkdir(parents=True, exist_ok=True)
            cmd += ["-b", str(self.binlog_dir)]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self.port = wait_for(self._listening_port, timeout=5.0, message=f"beanstalkd {cmd} to listen")

    def _listening_port(self) -> int | None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise AssertionError(
                f"beanstalkd exited with {self._proc.returncode}: {self.log_path.read_text(errors='replace')}"
            )
        try:
            conns = _tcp_connections(psutil.Process(self._proc.pid))
        except psutil.NoSuchProcess:
            return None
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN:
                return int(conn.laddr.port)
        return None

    def stop(self) -> None:
        """TERM, wait, then KILL. Jobs survive only when a binlog is used."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def restart(self) -> None:
        """Stop (if running) and start a new process on the same port and binlog dir."""
        self.stop()
        self.start()

    def client(self, **kwargs: Any) -> Client[bytes]:
        """A greenstalk client with bytes bodies, closed at teardown.

        kwargs go to greenstalk.Client (use=..., watch=...). A restart kills
        every open connection: take a new client after it.
        """
        client: Client[bytes] = greenstalk.Client((self.host, self.port), encoding=None, **kwargs)
        self._clients.append(client)
        return client

    def stats(self) -> dict[str, Any]:
        """Server-wide `stats`, on a short-lived connection."""
        with greenstalk.Client((self.host, self.port), encoding=None) as client:
            return dict(client.stats())

    def stats_tube(self, tube: str) -> dict[str, Any]:
        """`stats-tube` on a short-lived connection (so it never changes what a
        test's own client uses or watches); zeros when the tube does not exist."""
        with greenstalk.Client((self.host, self.port), encoding=None) as client:
            try:
                return dict(client.stats_tube(tube))
            except greenstalk.NotFoundError:
                return _zero_tube_stats(tube)

    def close(self) -> None:
        """Teardown: close the clients handed out, then stop the server."""
        for client in self._clients:
            try:
                client.close()
            except OSError:
                pass
        self._clients.clear()
        self.stop()


def queue_tube(queue: str, tube_namespace: str = TUBE_NAMESPACE) -> str:
    """The wire name of a queue's tube, as backburner names it."""
    return f"{tube_namespace}.{queue}"


def put_job(
    client: Client[Any],
    queue: str,
    name: str,
    args: list[Any] | None = None,
    pri: int = 65536,
    delay: int = 0,
    ttr: int = 120,
    tube_namespace: str = TUBE_NAMESPACE,
) -> int:
    """Enqueue a backburner-format job (`{"class": ..., "args": [...]}`) and return its id.

    Note: this switches the client's used tube.
    """
    body = json.dumps({"class": name, "args": list(args or [])}, separators=(",", ":")).encode()
    client.use(queue_tube(queue, tube_namespace))
    return client.put(body, priority=pri, delay=delay, ttr=ttr)


def job_state(client: Client[Any], job_id: int) -> dict[str, Any] | None:
    """`stats-job` as a dict, or None when the job is gone (deleted)."""
    try:
        return dict(client.stats_job(job_id))
    except greenstalk.NotFoundError:
        return None


# --------------------------------------------------------------------------
# processes and sockets


def _tcp_connections(proc: psutil.Process) -> list[Any]:
    # psutil < 6 only has the old name.
    method = getattr(proc, "net_connections", None) or proc.connections
    return list(method(kind="tcp"))


def open_tcp_fds(pid: int) -> list[tuple[Addr, Addr]]:
    """(laddr, raddr) of every TCP socket the process holds; raddr is () when listening.

    Used to check which process owns which beanstalkd connection (for
    example that a forked child does not share its parent's socket).
    """
    return [(tuple(c.laddr), tuple(c.raddr)) for c in _tcp_connections(psutil.Process(pid))]


_SOCKET_LINK = re.compile(r"socket:\[(\d+)\]")


def socket_inodes(pid: int) -> list[int]:
    """Inode numbers of all sockets in /proc/<pid>/fd, sorted.

    Two processes holding the same inode share one socket (an fd inherited
    across fork), which psutil's per-process view does not show.
    """
    fd_dir = Path(f"/proc/{pid}/fd")
    inodes = set()
    for entry in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / entry)
        except FileNotFoundError:  # closed between listdir and readlink
            continue
        match = _SOCKET_LINK.fullmatch(target)
        if match:
            inodes.add(int(match.group(1)))
    return sorted(inodes)


def proc_title(proc: psutil.Process) -> str:
    """The process title as set by setproctitle, e.g. `bbsupervise: worker q #1 idle`.

    This is `cmdline()[0]` in the usual case, but psutil splits a title on
    spaces in some layouts, so the parts are joined back together.
    """
    return " ".join(part for part in proc.cmdline() if part)


# --------------------------------------------------------------------------
# the supervisor


def make_config(
    url: str,
    queues: Mapping[str, int | Mapping[str, Any]],
    imports: str = "tests.jobs",
    **supervisor_keys: Any,
) -> str:
    """INI text for bbsupervise.

    `queues` maps a queue name to its process count, or to a dict of keys for
    its `[queue:<name>]` section. Extra keyword arguments become keys of
    `[supervisor]` (booleans are written as true/false).
    """

    def value(v: Any) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)

    lines = ["[supervisor]", f"beanstalk_url = {url}", f"imports = {imports}"]
    lines += [f"{key} = {value(v)}" for key, v in supervisor_keys.items()]
    for name, spec in queues.items():
        keys = {"processes": spec} if isinstance(spec, int) else dict(spec)
        lines += ["", f"[queue:{name}]"] + [f"{key} = {value(v)}" for key, v in keys.items()]
    return "\n".join(lines) + "\n"


Pattern = str | re.Pattern[str]


class Supervisor:
    """A running bbsupervise master, started from a config file under `workdir`.

    stdout and stderr are drained line by line by background threads (so the
    master never blocks on a full pipe and tests can wait for a log line);
    the lines are also appended to `workdir/supervisor.log` for debugging.
    Every descendant pid seen is remembered so that `stop()` can kill
    children that outlived their master.
    """

    def __init__(
        self,
        config_text: str,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        use_console_script: bool = False,
        argv: list[str] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.config_path = workdir / "bb.ini"
        self.log_path = workdir / "supervisor.log"
        self.config_path.write_text(config_text)
        if argv is None:
            if use_console_script:
                argv = [str(Path(sys.executable).parent / "bbsupervise")]
            else:
                argv = [sys.executable, "-m", "supervisor"]
            argv += ["-c", str(self.config_path)]
        self.argv = argv
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + ([full_env["PYTHONPATH"]] if full_env.get("PYTHONPATH") else [])
        )
        full_env["PYTHONUNBUFFERED"] = "1"  # print() output shows up as it happens
        full_env.update(env or {})

        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._seen: dict[int, psutil.Process] = {}
        self._log = self.log_path.open("a", encoding="utf-8")
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._drain, args=(pipe,), daemon=True)
            for pipe in (self.proc.stdout, self.proc.stderr)
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _drain(self, pipe: IO[bytes]) -> None:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            with self._lock:
                self._lines.append(line)
                if not self._log.closed:
                    self._log.write(line + "\n")
                    self._log.flush()
        pipe.close()

    def _output_done(self) -> bool:
        return not any(reader.is_alive() for reader in self._readers)

    def lines(self) -> list[str]:
        """A snapshot of every output line so far (stdout and stderr interleaved)."""
        with self._lock:
            return list(self._lines)

    def tail(self, n: int = 40) -> str:
        """The last n output lines, for failure messages."""
        return "\n".join(self.lines()[-n:])

    def wait_for_line(self, pattern: Pattern, timeout: float = 10.0, count: int = 1) -> str:
        """Wait until `count` lines match and return the count-th one.

        A str matches as a substring, a compiled pattern with `search`. Fails
        early when the master has exited and its output is closed.
        """
        if isinstance(pattern, str):
            needle = pattern
            matches: Callable[[str], bool] = lambda line: needle in line
        else:
            regex = pattern
            matches = lambda line: regex.search(line) is not None
        found: list[str] = []
        scanned = 0

        def check() -> str | None:
            nonlocal scanned
            done = self._output_done()  # read before the lines, so none are missed
            with self._lock:
                new = self._lines[scanned:]
            scanned += len(new)
            found.extend(line for line in new if matches(line))
            if len(found) >= count:
                return found[count - 1]
            if done:
                raise AssertionError(
                    f"output closed (exit {self.proc.poll()}) with {len(found)}/{count} lines "
                    f"matching {pattern!r}; last lines:\n{self.tail()}"
                )
            return None

        return wait_for(
            check,
            timeout=timeout,
            message=lambda: f"{len(found)}/{count} lines matching {pattern!r}; last lines:\n{self.tail()}",
        )

    def _remember_descendants(self) -> None:
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self._seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def _remember_session(self) -> None:
        """Also remember processes in the master's session: a child forked after
        the last look and orphaned by a dead master is no longer its descendant,
        but it keeps the session id (= master pid, from start_new_session)."""
        for proc in psutil.process_iter():
            try:
                if proc.pid != self.proc.pid and os.getsid(proc.pid) == self.proc.pid:
                    self._seen.setdefault(proc.pid, proc)
            except (OSError, psutil.Error):
                pass

    def children(self) -> list[psutil.Process]:
        """The master's direct children (and remember all descendants for teardown)."""
        self._remember_descendants()
        try:
            return psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return []

    def titles(self) -> list[str]:
        """Titles of the direct children; a child that just exited is left out."""
        titles = []
        for child in self.children():
            try:
                titles.append(proc_title(child))
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
        return titles

    def wait_children(self, n: int, timeout: float = 10.0) -> list[psutil.Process]:
        """Wait until exactly n children exist and all of them are idle (connected,
        waiting for a job), and return them."""

        def ready() -> tuple[list[psutil.Process]] | None:
            # Wrapped in a tuple so that n == 0 is truthy too.
            children = self.children()
            if len(children) != n:
                return None
            try:
                if all(IDLE_MARKER in proc_title(child) for child in children):
                    return (children,)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
            return None

        return wait_for(
            ready,
            timeout=timeout,
            message=lambda: f"{n} idle children, have {self.titles()}; last lines:\n{self.tail()}",
        )[0]

    def signal(self, sig: int) -> None:
        """Send a signal to the master only (not its process group)."""
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait for the master to exit and return its exit code."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"master {self.proc.pid} still running after {timeout}s; last lines:\n{self.tail()}"
            ) from None
        # Let the readers take the last lines; a leftover child holding the
        # pipes open would keep them alive, hence the bound.
        for reader in self._readers:
            reader.join(timeout=2)
        return code

    def stop(self) -> None:
        """Teardown: TERM the master and wait up to 10 s, then KILL its process
        group, then KILL every remembered descendant that is still running."""
        self._remember_descendants()
        self._remember_session()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        for proc in self._seen.values():
            try:
                # is_running() also compares the start time, so a reused pid is left alone.
                if proc.is_running():
                    proc.kill()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                pass
        for reader in self._readers:
            reader.join(timeout=2)
        with self._lock:
            self._log.close()


WORKER_TITLE = re.compile(r"^bbsupervise: worker (\S+) #(\d+)(?: (.*))?$")


def by_slot(sup: "Supervisor") -> dict[str, psutil.Process]:
    """Live children of the master keyed by slot (`"q #1"`), from their titles."""
    slots = {}
    for child in sup.children():
        try:
            match = WORKER_TITLE.match(proc_title(child))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if match:
            slots[f"{match.group(1)} #{match.group(2)}"] = child
    return slots


def wait_state(sup: "Supervisor", beanstalkd: "Beanstalkd", job_id: int | None, state: str | None,
               timeout: float = 10.0) -> dict[str, Any]:
    """Wait until stats-job says ``state`` (None = deleted); returns the stats."""
    assert job_id is not None  # enqueue returns None only when a hook vetoed it
    client = beanstalkd.client()

    def reached() -> dict[str, Any] | None:
        stats = job_state(client, job_id)
        if state is None:
            return {"state": "deleted"} if stats is None else None
        return stats if stats is not None and stats["state"] == state else None

    return wait_for(reached, timeout=timeout,
                    message=lambda: f"job {job_id} {state or 'deleted'} (now "
                                    f"{job_state(client, job_id)}); last lines:\n{sup.tail()}")

