"""bbsupervise's ``supervisor`` package can be installed next to supervisord's.

Both are imported as ``supervisor``; that can only work if no module name of
ours shadows one of theirs, and if our ``__init__`` runs no code (theirs is
empty too, so whichever ``__init__`` wins changes nothing).
"""
from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest

import supervisor

PACKAGE_DIR = Path(supervisor.__file__).resolve().parent

# The modules of supervisord's `supervisor` package (4.x).
SUPERVISORD_MODULES = frozenset("""
    options process states events http loggers poller datatypes dispatchers
    rpcinterface supervisord supervisorctl childutils compat web xmlrpc
    templating socket_manager pidproxy confecho http_client
""".split())


def our_module_names() -> set[str]:
    """Every module and subpackage in supervisor/, whether or not pkgutil sees it."""
    names = {info.name for info in pkgutil.iter_modules([str(PACKAGE_DIR)])}
    for entry in PACKAGE_DIR.iterdir():
        if entry.name.startswith((".", "__pycache__")):
            continue
        if entry.is_dir():
            names.add(entry.name)
        elif entry.suffix in (".py", ".pyc", ".so", ".pyi"):
            names.add(entry.name.split(".", 1)[0])
    return names


def test_the_package_has_modules() -> None:
    # Guard against checking an empty or wrong directory.
    assert {"cli", "config", "settings"} <= our_module_names()


@pytest.mark.parametrize("name", sorted(SUPERVISORD_MODULES))
def test_no_module_reuses_a_supervisord_module_name(name: str) -> None:
    assert name not in our_module_names(), (
        f"supervisor/{name} would shadow supervisord's supervisor.{name}")


def test_init_holds_only_a_docstring() -> None:
    source = (PACKAGE_DIR / "__init__.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    assert len(tree.body) == 1, f"__init__.py has {len(tree.body)} statements"
    (only,) = tree.body
    assert isinstance(only, ast.Expr)
    assert isinstance(only.value, ast.Constant) and isinstance(only.value.value, str)
    assert only.value.value.strip()
