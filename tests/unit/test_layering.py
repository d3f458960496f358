"""The layering of the house (docs/design.md), written down as tests.

- ``wsq/core`` is the bottom: it imports nothing of wsq outside it, and no asyncio.
- ``wsq/protocol`` (sans-I/O) imports the core only: never a broker, the hub or the server side,
  and no asyncio.
- ``wsq/broker`` imports the core only (and ``wsq.background``, how background tasks are
  stopped, which imports nothing of wsq): never the protocol core, nor the server side (hub,
  gateway, bridge, configuration, auth); what both need lives in the core.
- ``wsq/client`` (the Python client) imports the core only: nothing of the gateway.

Every import counts, wherever it stands in a module (in a function, under TYPE_CHECKING): each
is a dependency of the design even where it costs nothing at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import wsq

PACKAGE = Path(wsq.__file__).parent

#: What each layer may import of wsq (module name prefixes).
ALLOWED = {
    "wsq.core": ("wsq.core",),
    "wsq.protocol": ("wsq.core", "wsq.protocol"),
    "wsq.broker": ("wsq.core", "wsq.broker", "wsq.background"),
    # A leaf of asyncio helpers for every layer that runs tasks.
    "wsq.background": (),
    # AMQP 1.0 (sans-I/O, like wsq.v1's protocol core, whose links and events it shares).
    "wsq.amqp": ("wsq.core", "wsq.protocol", "wsq.amqp"),
    # The Python client runs in other people's processes: the gateway's modules are not its.
    "wsq.client": ("wsq.core", "wsq.client"),
}
#: Standard modules a layer must not import at all.
FORBIDDEN_STDLIB = {
    "wsq.core": ("asyncio",),
    "wsq.protocol": ("asyncio",),
    "wsq.amqp": ("asyncio",),
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = PACKAGE) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield node.lineno, module
            # ``from wsq import hub`` imports the module wsq.hub.
            if module == "wsq":
                for alias in node.names:
                    yield node.lineno, f"wsq.{alias.name}"


def layer_of(name: str) -> str | None:
    for layer in ALLOWED:
        if name == layer or name.startswith(layer + "."):
            return layer
    return None


def violations(root: Path = PACKAGE) -> list[str]:
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        layer = layer_of(name)
        if layer is None:
            continue
        for line, target in imports(path, root):
            top = target.split(".")[0]
            if top in FORBIDDEN_STDLIB.get(layer, ()):
                found.append(f"{name}:{line} imports {target}")
            if (target == "wsq" or target.startswith("wsq.")) and not any(
                target == allowed or target.startswith(allowed + ".") for allowed in ALLOWED[layer]
            ):
                found.append(f"{name}:{line} imports {target}")
    return found


def test_each_layer_imports_only_what_is_below_it() -> None:
    assert violations() == []


def test_the_layering_test_sees_a_forbidden_import(tmp_path: Path) -> None:
    # The check itself bites: a copy of the package with one bad import in each layer.
    fake = tmp_path / "wsq"
    for sub, bad in (
        ("core", "import asyncio\n"),
        ("protocol", "from wsq.broker.base import Broker\n"),
        ("broker", "from ..protocol import state\n"),
    ):
        (fake / sub).mkdir(parents=True)
        (fake / sub / "__init__.py").write_text("")
        (fake / sub / "bad.py").write_text(bad)
    (fake / "__init__.py").write_text("")
    assert violations(fake) == [
        "wsq.broker.bad:1 imports wsq.protocol",
        "wsq.core.bad:1 imports asyncio",
        "wsq.protocol.bad:1 imports wsq.broker.base",
    ]


@pytest.mark.parametrize(
    "module",
    ["wsq.protocol.connection", "wsq.amqp.connection", "wsq.core.messages", "wsq.core.props"],
)
def test_the_sans_io_core_loads_without_asyncio(module: str) -> None:
    code = f"import sys, {module}; sys.exit(1 if 'asyncio' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, f"importing {module} loads asyncio {done.stderr}"


#: Lines a module may have before its first comment must say why it is longer.
MAX_LINES = {".py": 600, ".js": 500}
REPO = PACKAGE.parent


def long_modules() -> list[str]:
    """Modules over their size without a first comment that says why ("longer than")."""
    found = []
    for pattern in ("wsq/**/*.py", "js-client/src/**/*.js"):
        for path in sorted(REPO.glob(pattern)):
            text = path.read_text(encoding="utf-8")
            lines = text.count("\n")
            if lines > MAX_LINES[path.suffix] and "longer than" not in text[:3000]:
                found.append(f"{path.relative_to(REPO)}: {lines} lines")
    return found


def test_modules_stay_small_or_say_why() -> None:
    assert long_modules() == []
