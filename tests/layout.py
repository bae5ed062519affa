"""The layering rules of DESIGN §3 as data, and a checker that reads a source tree's imports.

Every import is resolved to the module it loads: `from . import x` and `from .a import b`
relative to the importing module, `from msd import store` to `msd.store` (a submodule, not the
package), and importing `a.b.c` loads `a` and `a.b` too. Imports inside functions count: a
lazy import is still an import. `violations(root)` lists every broken rule; tests/unit/test_layout
.py asserts there are none in msd/ and that planted violations are found.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}

NEUTRAL = "msd.values"          # shared value types: stdlib only, every layer may import it
# The neighbours' order and position rules (CONTRACTS §1.2, §3.5, §3.6): pure, stdlib and values
# only; the exit rules, the paper exchange and the backtest share them.
EXCHANGE_RULES = "msd.exchange"
DOMAIN = (EXCHANGE_RULES, "msd.rules", "msd.ml", "msd.market", "msd.strategies", "msd.learning")
EDGES = ("msd.bus", "msd.store")
WIRING = "msd.roles"
ENTRY_POINTS = ("msd.cli", "msd.ctl", "msd.ctl_models", "msd.ctl_modes")
SIM = "msd.sim"
# `msd backtest`: the domain's decisions over recorded candles, in memory; it never reaches the
# database, the broker, the daemon's wiring or the paper exchange.
BACKTEST = "msd.backtest"

# What the supervisor process may load (DESIGN §3): msd.supervisor, the shape-only part of
# msd.config, systemd, logs, metrics (with the stdlib-only metrics_dir it prepares first) and
# errors; of third-party packages only these.
# msd.cli is the process's entry point (`msd run`); what its other commands import lazily is
# followed only when a supervisor module imports it.
SUPERVISOR_MSD = ("msd", "msd.cli", "msd.supervisor", "msd.config", "msd.config.reader", "msd.systemd", "msd.logs",
                  "msd.metrics", "msd.metrics_dir", "msd.errors")
SUPERVISOR_THIRD_PARTY = frozenset({"yaml", "watchdog", "prometheus_client", "sdnotify", "pythonjsonlogger"})

IO_PACKAGES = frozenset({"pika", "psycopg2", "prometheus_client", "watchdog", "yaml", "sdnotify", "pythonjsonlogger",
                         "socket", "ssl", "http", "urllib", "subprocess", "multiprocessing", "sqlite3"})
ML_THIRD_PARTY = frozenset({"numpy", "scipy", "statsmodels"})


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    imports: set[str] = field(default_factory=set)            # resolved module names
    imported_names: set[tuple[str, str]] = field(default_factory=set)   # (module, name) of `from m import name`


def load_tree(root: Path, top: str = "msd") -> dict[str, Module]:
    """Every module under root/top by dotted name, with its imports resolved."""
    modules = {}
    for path in sorted((root / top).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = Module(name, path, is_package, ast.parse(path.read_text(), filename=str(path)))
    for module in modules.values():
        _resolve(module, modules)
    return modules


def _resolve(module: Module, modules: dict[str, Module]) -> None:
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module.imports |= _with_parents(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            module.imports |= _with_parents(base)
            for alias in node.names:
                module.imported_names.add((base, alias.name))
                if f"{base}.{alias.name}" in modules:          # `from msd import store` loads msd.store
                    module.imports |= _with_parents(f"{base}.{alias.name}")


def _with_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} if name else set()


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def top(name: str) -> str:
    return name.split(".")[0]


def closure(modules: dict[str, Module], start: Iterable[str]) -> set[str]:
    """Every module (msd's and others') loaded, directly or indirectly, by importing `start`."""
    seen: set[str] = set()
    todo = [name for s in start for name in _with_parents(s)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in modules:
            todo.extend(modules[name].imports - seen)
    return seen


@dataclass(frozen=True)
class Rule:
    """Modules in `where` may not import what `forbidden` says (a predicate on the imported name)."""
    name: str
    where: tuple[str, ...]
    forbidden: object           # (importer, imported) -> bool
    unless: tuple[str, ...] = ()


def _rules() -> list[Rule]:
    def outside(*allowed_msd, third_party=frozenset()):
        def forbidden(_importer: str, imported: str) -> bool:
            if top(imported) == "msd":
                return not within(imported, *allowed_msd)
            return top(imported) not in STDLIB and top(imported) not in third_party
        return forbidden
    return [
        Rule("the neutral values module imports the standard library only", (NEUTRAL,), outside(NEUTRAL)),
        Rule("msd.errors imports the standard library only", ("msd.errors",), outside("msd.errors")),
        Rule("the exchange rules import the standard library and the neutral values module only",
             (EXCHANGE_RULES,), outside(EXCHANGE_RULES, NEUTRAL)),
        Rule("rules import the standard library, the neutral values module and the exchange rules only",
             ("msd.rules",), outside("msd.rules", NEUTRAL, EXCHANGE_RULES)),
        Rule("ml imports no I/O package (and of msd only ml, values, errors)", ("msd.ml",),
             lambda _i, m: top(m) in IO_PACKAGES or outside("msd.ml", NEUTRAL, "msd.errors",
                                                             third_party=ML_THIRD_PARTY)(_i, m)),
        Rule("no production package imports the paper exchange", ("msd",), lambda _i, m: within(m, SIM),
             unless=(SIM,)),
        Rule("only bus touches pika", ("msd",), lambda _i, m: top(m) == "pika", unless=("msd.bus",)),
        Rule("only store touches the database driver", ("msd",), lambda _i, m: top(m) == "psycopg2",
             unless=("msd.store",)),
        Rule("only roles (and the entry points) import roles", ("msd",), lambda _i, m: within(m, WIRING),
             unless=(WIRING, *ENTRY_POINTS)),
        Rule("the edges do not know each other", ("msd.bus",), lambda _i, m: within(m, "msd.store")),
        Rule("the edges do not know each other", ("msd.store",), lambda _i, m: within(m, "msd.bus")),
        # The store returns plain values (msd.values records, numpy arrays), never a domain type:
        # it used to import learning's Decision and CostFill and ml's TradeFill.
        Rule("the store knows no domain", ("msd.store",), lambda _i, m: within(m, *DOMAIN)),
        Rule("edges wire nothing: no roles, supervisor or config", EDGES,
             lambda _i, m: within(m, WIRING, "msd.supervisor", "msd.config")),
        Rule("the domain reaches no broker and no wiring", DOMAIN,
             lambda _i, m: within(m, "msd.bus", WIRING, "msd.supervisor", "msd.config")),
        Rule("the backtest reaches no edge, no wiring and no paper exchange", (BACKTEST,),
             lambda _i, m: within(m, *EDGES, WIRING, "msd.supervisor", SIM)),
        Rule("the pure domain reaches no edge", (EXCHANGE_RULES, "msd.rules", "msd.ml", "msd.market", "msd.strategies"),
             lambda _i, m: within(m, *EDGES)),
    ]


def violations(root: Path) -> list[str]:
    modules = load_tree(root)
    # `msd` itself (an empty package, tests/unit/test_layout.py) is loaded by every msd import.
    found = [f"{rule.name}: {name} imports {imported}"
             for rule in _rules() for name, module in modules.items()
             if within(name, *rule.where) and not within(name, *rule.unless)
             for imported in sorted(module.imports - {name, "msd"}) if rule.forbidden(name, imported)]
    found += _wiring_violations(modules)
    found += _sim_privacy_violations(modules)
    found += supervisor_violations(modules)
    return found


def _wiring_violations(modules: dict[str, Module]) -> list[str]:
    """Only roles wire everything together: nothing else imports both edges (the paper exchange is
    a program of its own, `msd-sim`: its runner wires its edges as roles do msd's)."""
    return [f"only roles wire the edges together: {name} imports both msd.bus and msd.store"
            for name, module in modules.items() if not within(name, WIRING, SIM, *ENTRY_POINTS)
            and any(within(m, "msd.bus") for m in module.imports) and any(within(m, "msd.store") for m in module.imports)]


def _sim_privacy_violations(modules: dict[str, Module]) -> list[str]:
    """The paper exchange uses bus and store through public names only."""
    found = []
    for name, module in modules.items():
        if not within(name, SIM):
            continue
        for source, imported in module.imported_names:
            if within(source, *EDGES) and (imported.startswith("_") or any(p.startswith("_") for p in source.split("."))):
                found.append(f"the paper exchange uses private names: {name} imports {source}.{imported}")
    return found


def supervisor_violations(modules: dict[str, Module]) -> list[str]:
    """Everything the supervisor's modules import, directly or indirectly, lazily included."""
    loaded = closure(modules, [n for n in modules if within(n, "msd.supervisor")])
    bad_msd = sorted(m for m in loaded if top(m) == "msd" and not _supervisor_allows(m))
    bad_other = sorted({top(m) for m in loaded if top(m) not in ("msd", *STDLIB)} - SUPERVISOR_THIRD_PARTY)
    return [f"the supervisor process loads {m}" for m in bad_msd + bad_other]


def _supervisor_allows(module: str) -> bool:
    return module in SUPERVISOR_MSD or within(module, "msd.supervisor")


def all_classes(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted((root / "msd").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                yield node.name, path
