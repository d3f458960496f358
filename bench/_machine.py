"""What a bench result says of where it ran: the machine, the runtimes and the commit measured
(``bench/run.py`` and ``bench/scale.py`` both record it)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def _out(*cmd: str) -> str:
    return subprocess.run(list(cmd), capture_output=True, text=True, cwd=BENCH).stdout.strip()


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "node": _out("node", "--version"),
        # the code measured: "-dirty" when the checkout had changes not committed
        "commit": _out("git", "describe", "--always", "--dirty", "--abbrev=7"),
    }
