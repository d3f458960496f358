"""The bench's scripts (bench/*.py are scripts, not a package) loaded as modules for tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
# the scripts import their shared modules (bench/_machine.py, ...) as run from bench/ would
if str(ROOT / "bench") not in sys.path:
    sys.path.append(str(ROOT / "bench"))


def load(relative: str, name: str) -> ModuleType:
    """``ROOT/relative`` as the module ``name``, registered in ``sys.modules`` (dataclasses
    look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
