"""The broker's Lua scripts, read from the ``.lua`` files in ``lua/``.

An entry script's first line may name the library files it needs (``-- needs: common trim``);
they are put before it, in that order, so that each script is sent to Redis whole (a script
runs in one slot of a cluster and cannot call another).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from wsq.core.policy import StoragePolicy

#: The scripts the broker registers, by name (``lua/<name>.lua``).
ENTRY_SCRIPTS = (
    *("publish", "read", "claim", "settle", "renew", "poll", "dead"),
    *("opengroup", "count", "admit", "presence", "occupancy", "hold"),
)

_NEEDS = "-- needs:"


@cache
def source(name: str) -> str:
    """The whole text of script ``name``, its libraries first."""
    text = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")
    first, _, rest = text.partition("\n")
    if not first.startswith(_NEEDS):
        return text
    return "".join(source(dep) for dep in first[len(_NEEDS) :].split()) + rest


def retention(cfg: StoragePolicy) -> tuple[int, int, int]:
    """The arguments of ``trim`` (``lua/trim.lua``) that the publish and read scripts take."""
    return (cfg.retention_max_len, cfg.retention_max_age_ms, cfg.retention_max_bytes)
