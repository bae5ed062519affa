"""What the domain validators of config sections share (not loaded by the supervisor).

Each role package's `config` module validates its section (`DOMAIN_SECTIONS` in msd.config)
with the domain's own constructors, and declares which parts of the file the role reads
(`Reads`); msd.roles.runtime.reload derives from those declarations which roles a reload
restarts and which it tells.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from msd.errors import ConfigError
from msd.values.parsing import InvalidValue

T = TypeVar("T")


def built(build: Callable[[], T], prefix: str = "") -> T:
    """Run a domain constructor; its InvalidValue becomes a ConfigError with the same key (under
    `prefix` when the constructor names its fields bare), value and allowed range."""
    try:
        return build()
    except InvalidValue as exc:
        raise ConfigError(prefix + exc.key, exc.value, exc.allowed) from None


@dataclass(frozen=True)
class Reads:
    """The parts of the config file a role reads: section names or dotted keys
    ("signaller.strategies"). A change to any of them restarts the role, unless every changed
    part is in `live`: the running role is then sent the new config and applies it."""
    parts: frozenset[str]
    live: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.live <= self.parts:
            raise ValueError(f"live parts {sorted(self.live - self.parts)} are not among the parts read")
