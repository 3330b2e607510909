"""``bbsupervise``: argv -> load config -> ``Arbiter(cfg).run()`` -> exit code.

    bbsupervise -c PATH [--check]          run the pool (or validate and exit)
    bbsupervise status -c PATH [--json]    what the running master and its children do
    bbsupervise ctl -c PATH reload|stop|scale [QUEUE] +N|-N|N

Exit codes (also in the README): 0 clean stop, 2 usage or config error,
1 abnormal end (every queue failing, cannot start, no master for ctl/status).
``--check`` with beanstalkd unreachable prints a warning and exits 0: the pool
would start and wait for the server.
"""
from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata

from supervisor import admin, logconfig, settings
from supervisor import config as config_mod
from supervisor.arbiter import Arbiter, ExitCode

EPILOG = ("Exit codes: 0 clean stop, 2 usage or config error, 1 abnormal end. Signals to "
          "the master: TERM/INT drain gracefully (a second one stops at once), QUIT stops "
          "at once, HUP reloads the config, TTIN/TTOU add/remove a worker, USR1 reopens "
          "log files. Every config option: --help-options.")


def version() -> str:
    try:
        return metadata.version("bbsupervise")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bbsupervise", epilog=EPILOG,
        usage="%(prog)s -c PATH [--check]\n       %(prog)s status -c PATH [--json]\n"
              "       %(prog)s ctl -c PATH reload|stop|scale [QUEUE] +N|-N|N",
        description="Run pools of beanstalkd job workers, per queue, from an INI config. "
                    "`status` shows the running pool; `ctl` steers it.")
    parser.add_argument("-c", "--config", metavar="PATH", help="the INI config file")
    parser.add_argument("--check", action="store_true",
                        help="validate the config, the job imports and the server; exit")
    parser.add_argument("--help-options", action="store_true",
                        help="print every config option with its default and meaning")
    parser.add_argument("--version", action="version", version=f"bbsupervise {version()}")
    return parser


def build_admin_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"bbsupervise {command}", epilog=EPILOG)
    parser.add_argument("-c", "--config", metavar="PATH", required=True,
                        help="the config file the master runs with")
    if command == "status":
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    else:
        parser.add_argument("words", nargs="+", metavar="COMMAND",
                            help="reload | stop | scale [QUEUE] +N|-N|N")
    return parser


def check(cfg: config_mod.Config) -> int:
    """``--check``: the summary, warnings, and whether beanstalkd answers."""
    from workers import connection, registry

    print(f"{cfg.path}: OK")
    print(f"jobs registered: {len(registry.names())} ({', '.join(registry.names())})")
    for q in cfg.queues.values():
        print(f"queue {q.name}: {_plural(q.processes, 'process', 'processes')}, tube {q.tube}")
    print(f"total: {_plural(cfg.total_processes, 'process', 'processes')}")
    if not registry.names():
        print("warning: no job is registered: `imports` names no module with @job",
              file=sys.stderr)
    stop = cfg["stop_timeout"]
    if stop is not None and cfg["graceful_timeout"] >= stop:
        print(f"warning: graceful_timeout ({cfg['graceful_timeout']:g} s) does not fit in "
              f"stop_timeout ({stop:g} s): the service manager would kill busy workers",
              file=sys.stderr)
    address = connection.parse_url(cfg["beanstalk_url"])
    try:
        connection.close_quietly(connection.open_client(address, reply_timeout=3.0))
    except OSError as exc:
        # Not a config error: the pool starts anyway and its workers connect
        # when the server comes up (so a deploy need not wait for beanstalkd).
        print(f"warning: beanstalkd: UNREACHABLE at {address[0]}:{address[1]}: {exc}; "
              "workers will wait for it and connect when it is up", file=sys.stderr)
        return ExitCode.OK
    print(f"beanstalkd: reachable at {address[0]}:{address[1]}")
    return ExitCode.OK


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def load(path: str, imports: bool, log_file: bool = True) -> config_mod.Config:
    cfg = config_mod.load(path)
    try:
        logconfig.setup(cfg["log_level"], cfg["log_file"] if log_file else None)
        if cfg["log_file"] and not log_file and not os.access(
                os.path.dirname(os.path.abspath(cfg["log_file"])), os.W_OK):
            raise PermissionError(f"directory of {cfg['log_file']} is not writable")
    except OSError as exc:
        raise config_mod.ConfigError(f"{path}: [supervisor] log_file: cannot open: "
                                     f"{exc}") from None
    if imports:
        # Job modules are the user's code, found like `python -m` finds
        # them: from the current directory first (gunicorn does the same).
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        config_mod.import_jobs(cfg)
        from workers import policy

        policy.use(policy.from_config(cfg))
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("status", "ctl"):
        return admin_main(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with usage on a bad flag
    if args.help_options:
        print(settings.render_markdown(), end="")
        return ExitCode.OK
    if not args.config:
        parser.print_usage(sys.stderr)
        print("bbsupervise: error: -c PATH is required", file=sys.stderr)
        return ExitCode.USAGE
    try:
        cfg = load(args.config, imports=True, log_file=not args.check)
        if args.check:
            Arbiter.child_setups(cfg)  # the worker hooks must import too
            return check(cfg)
        arbiter = Arbiter(cfg)
    except config_mod.ConfigError as exc:
        print(f"bbsupervise: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    return arbiter.run()


def admin_main(command: str, argv: list[str]) -> int:
    args = build_admin_parser(command).parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
        if command == "status":
            print(admin.status(cfg, args.json))
        else:
            print(admin.ctl(cfg, args.words))
    except config_mod.ConfigError as exc:
        print(f"bbsupervise: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except ValueError as exc:
        print(f"bbsupervise {command}: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except (admin.NotRunning, OSError) as exc:
        print(f"bbsupervise {command}: {exc}", file=sys.stderr)
        return ExitCode.ABNORMAL
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
