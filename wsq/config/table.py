"""Strict, typed reads of one table of the configuration, every problem named by its key."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

from wsq.core.errors import ConfigError


def describe(value: object) -> str:
    """``value`` named in TOML terms, for error messages."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


class Table:
    """Strict, typed reads of one table; every problem is a ConfigError naming its key.

    Every getter records its key, present or not, so that ``finish`` can refuse the keys nobody
    asked for (misspellings above all) and list the ones that are known.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        source: str,
        path: str = "",
        origins: Mapping[str, str] | None = None,
    ) -> None:
        self.data = data
        self.source = source
        self.path = path
        self._origins = origins or {}
        self._known: list[str] = []

    @property
    def where(self) -> str:
        return f"{self.source}: {self.path}" if self.path else self.source

    def label(self, key: str) -> str:
        if key in self._origins:
            return self._origins[key]
        return f"{self.source}: {self.path}.{key}" if self.path else f"{self.source}: {key}"

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.label(key)}: {problem}")

    def _take(self, key: str) -> Any:
        if key not in self._known:
            self._known.append(key)
        return self.data.get(key)

    def get_int(self, key: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        value = self._take(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {describe(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            if maximum is None:
                raise self.error(key, f"must be at least {minimum}, got {value}")
            raise self.error(key, f"must be between {minimum} and {maximum}, got {value}")
        return value

    def get_float(self, key: str, default: float, *, minimum: float) -> float:
        value = self._take(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {describe(value)}")
        number = float(value)
        if not math.isfinite(number) or number < minimum:
            raise self.error(key, f"must be a finite number of at least {minimum}, got {value}")
        return number

    def get_bool(self, key: str, default: bool) -> bool:
        value = self._take(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {describe(value)}")
        return value

    def get_opt_str(self, key: str, *, allow_empty: bool = False) -> str | None:
        value = self._take(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {describe(value)}")
        if not value and not allow_empty:
            raise self.error(key, "must not be empty")
        return value

    def get_str(self, key: str, default: str, *, allow_empty: bool = False) -> str:
        value = self.get_opt_str(key, allow_empty=allow_empty)
        return default if value is None else value

    def get_table(self, key: str) -> Mapping[str, Any]:
        value = self._take(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a table, got {describe(value)}")
        return value

    def get_list(self, key: str) -> list[Any] | None:
        value = self._take(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.error(key, f"expected an array, got {describe(value)}")
        return value

    def finish(self) -> None:
        """Refuse every key that no getter asked for."""
        for key in self.data:
            if key in self._known:
                continue
            close = difflib.get_close_matches(key, self._known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            known = ", ".join(self._known) or "none"
            raise self.error(key, f"unknown key; {hint}known keys here: {known}")
