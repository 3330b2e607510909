"""INI file -> frozen :class:`Config`.

Every error names the file, the section and the key (rule 5: bad input gets
a clear error, never a traceback). Values are parsed by the option table in
:mod:`supervisor.settings`; this module only knows the file's shape.
"""
from __future__ import annotations

import configparser
import importlib
import os
import traceback
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from supervisor import settings
from workers.wire import TubeNameError, tube_name

QUEUE_PREFIX = "queue:"


class ConfigError(Exception):
    """The config cannot be used; ``str()`` is the one line shown to the user."""


@dataclass(frozen=True)
class QueueConfig:
    """One ``[queue:NAME]`` section, with inherited values already filled in."""

    name: str
    tube: str
    values: Mapping[str, Any]

    @property
    def processes(self) -> int:
        return int(self.values["processes"])

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


@dataclass(frozen=True)
class Config:
    path: str
    values: Mapping[str, Any]
    queues: Mapping[str, QueueConfig] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def total_processes(self) -> int:
        return sum(q.processes for q in self.queues.values())


def _read(path: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True,
                                       default_section="\0no-defaults")
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case for errors
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh, source=path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(f"{path}: [{exc.section}] {exc.option}: set twice "
                          f"(again on line {exc.lineno})") from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(f"{path}: [{exc.section}]: section appears twice "
                          f"(again on line {exc.lineno})") from None
    except configparser.Error as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(f"{path}: {message}") from None
    return parser


def _parse_section(path: str, section: str, items: Mapping[str, str],
                   scope: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in items.items():
        option = settings.BY_NAME.get(key)
        if option is None or scope not in option.scopes:
            where = "" if option is None else f" (allowed only in {_scopes(option)})"
            raise ConfigError(f"{path}: [{section}] {key}: unknown option{where}")
        try:
            values[key] = option.parse(raw)
        except settings.OptionError as exc:
            raise ConfigError(f"{path}: [{section}] {key}: {exc}") from None
    return values


def _scopes(option: settings.Option) -> str:
    return " and ".join("[supervisor]" if s == settings.GLOBAL else "[queue:NAME]"
                        for s in option.scopes)


def load(path: str) -> Config:
    """Read and validate ``path``; raise :class:`ConfigError` on any problem."""
    parser = _read(path)
    top = settings.defaults(settings.GLOBAL)
    queues: dict[str, QueueConfig] = {}
    for section in parser.sections():
        if section == settings.GLOBAL:
            top.update(_parse_section(path, section, parser[section], settings.GLOBAL))
        elif not section.startswith(QUEUE_PREFIX):
            raise ConfigError(f"{path}: [{section}]: unknown section "
                              "(expected [supervisor] or [queue:NAME])")
    for section in parser.sections():
        if section.startswith(QUEUE_PREFIX):
            queue = _queue(path, section, parser[section], top)
            queues[queue.name] = queue
    if not queues:
        raise ConfigError(f"{path}: no [queue:NAME] section: nothing to run")
    return Config(path=path, values=MappingProxyType(top), queues=MappingProxyType(queues))


def _queue(path: str, section: str, items: Mapping[str, str],
           top: Mapping[str, Any]) -> QueueConfig:
    name = section[len(QUEUE_PREFIX):].strip()
    if not name:
        raise ConfigError(f"{path}: [{section}]: queue name is empty")
    # Precedence: queue section, then [supervisor], then the built-in default.
    values = settings.defaults(settings.QUEUE)
    values.update({k: top[k] for k in values if k in top})
    values.update(_parse_section(path, section, items, settings.QUEUE))
    try:
        tube = tube_name(name, top["tube_namespace"], top["namespace_separator"])
    except TubeNameError as exc:
        raise ConfigError(f"{path}: [{section}]: {exc}") from None
    return QueueConfig(name=name, tube=tube, values=MappingProxyType(values))


def import_jobs(config: Config) -> None:
    """Import the job modules named by ``imports``; errors name the module."""
    for module in config["imports"]:
        try:
            importlib.import_module(module)
        except BaseException as exc:  # noqa: BLE001 - any failure of user code is a config error
            if isinstance(exc, KeyboardInterrupt):
                raise
            frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
            last = [f for f in frames if "importlib" not in f.filename and f.filename != __file__
                    and not f.filename.startswith("<frozen")][-1:]
            where = f" ({os.path.basename(last[0].filename)}:{last[0].lineno})" if last else ""
            raise ConfigError(f"{config.path}: [supervisor] imports: cannot import "
                              f"{module!r}: {type(exc).__name__}: {exc}{where}") from None


def resolve_hook(config: Config, spec: str | None, where: str) -> Any:
    """``module:function`` -> the callable, or ``None`` when not configured."""
    if spec is None:
        return None
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # noqa: BLE001 - user code
        raise ConfigError(f"{config.path}: {where}: cannot load {spec!r}: "
                          f"{type(exc).__name__}: {exc}") from None
