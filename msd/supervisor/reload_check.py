"""Validating a config in full without loading the domain into the supervisor (DESIGN §3, §4).

The supervisor process holds only the shape of the config (msd.config.read_config). Before it
applies a reload, a short-lived child runs `msd check-config FILE --reload-plan`, the same code
as `msd check-config`: it validates every section with its domain's code and answers, as JSON,
either the error (key, value, allowed range) or the plan (changed sections, roles to restart,
roles that apply the change live), derived from the roles' declarations
(msd.roles.runtime.reload). The file is read once, here, and the child is given that text, so
the supervisor applies exactly what was validated. An invalid file, a child that fails or does
not answer in time: the running config is kept. At start-up the same child, or `msd migrate`
(which validates the file first), runs before the supervisor starts anything.
"""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from msd.config import Config, read_config, read_text
from msd.errors import ConfigError

CHECK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ReloadPlan:
    changed_sections: list[str]
    affected: list[str]          # roles (and the trainer) reading a part that changed
    live: list[str]              # of those, the ones that apply the change without a restart


def check_reload(running: Config, timeout_s: float = CHECK_TIMEOUT_S) -> tuple[Config, ReloadPlan]:
    """The new config (its shape) and what applying it means; raises ConfigError when invalid."""
    text = read_text(running.source)
    reply = _ask_child(running.source, pickle.dumps({"running": running, "text": text}), timeout_s)
    if not reply.get("ok"):
        error = reply.get("error") or {}
        raise ConfigError(str(error.get("key", "<file>")), error.get("value"), str(error.get("allowed", "?")))
    new = read_config(running.source, running.context.env, text=text)
    return new, ReloadPlan(list(reply["changed_sections"]), list(reply["affected"]), list(reply["live"]))


def check_at_start(path: Path, *, migrate: bool) -> int:
    """`msd migrate -c FILE` (which validates the whole file first) or `msd check-config FILE` in a
    child; its diagnostics go to our stderr. Returns its exit code (0 = valid)."""
    command = ["migrate", "-c", str(path)] if migrate else ["check-config", str(path)]
    return subprocess.run([sys.executable, "-m", "msd.cli", *command], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL).returncode


def _ask_child(path: Path, request: bytes, timeout_s: float) -> dict:
    try:
        done = subprocess.run([sys.executable, "-m", "msd.cli", "check-config", str(path), "--reload-plan"],
                              input=request, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ConfigError("<file>", str(path), f"a config the check validates within {timeout_s:g}s "
                                               "(the check child did not answer)") from None
    try:
        return json.loads(done.stdout)
    except ValueError:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise ConfigError("<file>", str(path), f"a config the check can validate (the check child failed: "
                                               f"{why[0][:300]})") from None
