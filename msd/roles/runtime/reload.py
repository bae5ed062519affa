"""Which roles a new config touches, derived from what each role declares it reads.

Every role package's `config` module declares `READS` (msd.config.domain.Reads): the sections or
dotted keys it reads and which of them it applies live. A reload restarts a role when a part it
reads changed, or tells the running role (it is sent the new config) when every changed part it
reads is one it applies live. Nothing here is kept by hand: a role that starts reading a part
declares it next to the code that reads it (tests/unit/test_layout.py checks that roles read
only sections they declare). This runs in the `msd check-config` child that validates a reload
(msd.supervisor.reload_check), never in the supervisor.
"""
from __future__ import annotations

from typing import Any, Mapping

from msd.config import TRAINER, Config, changed_sections
from msd.config.domain import Reads
from msd.roles.consumer.config import READS as CONSUMER_READS
from msd.roles.exits.config import READS as EXITS_READS
from msd.roles.signaller.config import READS as SIGNALLER_READS
from msd.roles.trainer.config import READS as TRAINER_READS

ROLE_READS: Mapping[str, Reads] = {
    "consumer": CONSUMER_READS, "signaller": SIGNALLER_READS, "exits": EXITS_READS, TRAINER: TRAINER_READS,
}


def part_of(config: Config, part: str) -> Any:
    """The value of a section ("database") or a dotted key ("signaller.strategies")."""
    value: Any = config
    for name in part.split("."):
        value = getattr(value, name)
    return value


def changed_parts(old: Config, new: Config) -> set[str]:
    """Changed sections, plus every declared dotted key whose value changed."""
    sections = changed_sections(old, new)
    keys = {part for reads in ROLE_READS.values() for part in reads.parts if "." in part}
    return sections | {part for part in keys if part.split(".")[0] in sections
                       and part_of(old, part) != part_of(new, part)}


def changed_roles(old: Config, new: Config) -> set[str]:
    """Roles (and the trainer) that read a part that differs between `old` and `new`."""
    changed = changed_parts(old, new)
    return {role for role, reads in ROLE_READS.items() if reads.parts & changed}


def applies_live(role: str, old: Config, new: Config) -> bool:
    """True when every part `role` reads that changed is one the running role applies live."""
    changed = changed_parts(old, new) & ROLE_READS[role].parts
    return bool(changed) and changed <= ROLE_READS[role].live


def reload_plan(old: Config, new: Config) -> dict[str, list[str]]:
    """What applying `new` over the running `old` means: the changed sections, the roles whose
    parts changed, and those of them that apply it live (the supervisor restarts the others)."""
    changed = changed_parts(old, new)
    affected = sorted(role for role, reads in ROLE_READS.items() if reads.parts & changed)
    return {"changed_sections": sorted(changed_sections(old, new)), "affected": affected,
            "live": [role for role in affected if (changed & ROLE_READS[role].parts) <= ROLE_READS[role].live]}
