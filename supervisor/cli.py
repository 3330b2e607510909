"""``bbsupervise``: argv -> load config -> ``Arbiter(cfg).run()`` -> exit code.

Exit codes (also in the README): 0 clean stop, 2 usage or config error,
any other non-zero an abnormal end.
"""
from __future__ import annotations

import argparse
import sys
from importlib import metadata

from supervisor import config as config_mod
from supervisor import logconfig, settings
from supervisor.arbiter import Arbiter, ExitCode


def version() -> str:
    try:
        return metadata.version("bbsupervise")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bbsupervise",
        description="Run pools of beanstalkd job workers, per queue, from an INI config.",
        epilog="Exit codes: 0 clean stop, 2 usage or config error, other non-zero abnormal "
               "end. Signals to the master: TERM/INT drain gracefully (a second one stops "
               "at once), QUIT stops at once. Options: see --help-options.")
    parser.add_argument("-c", "--config", metavar="PATH", help="the INI config file")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and the job imports, print a summary, exit")
    parser.add_argument("--help-options", action="store_true",
                        help="print every config option with its default and meaning")
    parser.add_argument("--version", action="version", version=f"bbsupervise {version()}")
    return parser


def check_summary(cfg: config_mod.Config) -> str:
    from workers import registry

    lines = [f"{cfg.path}: OK", f"beanstalkd: {cfg['beanstalk_url']}",
             f"jobs registered: {len(registry.names())}"]
    for q in cfg.queues.values():
        lines.append(f"queue {q.name}: {q.processes} processes, tube {q.tube}")
    lines.append(f"total: {cfg.total_processes} processes")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
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
        cfg = config_mod.load(args.config)
        logconfig.setup(cfg["log_level"])
        config_mod.import_jobs(cfg)
        from workers import policy

        policy.use(policy.from_config(cfg))
        if args.check:
            print(check_summary(cfg))
            return ExitCode.OK
        arbiter = Arbiter(cfg)
    except config_mod.ConfigError as exc:
        print(f"bbsupervise: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    return arbiter.run()


if __name__ == "__main__":
    raise SystemExit(main())
