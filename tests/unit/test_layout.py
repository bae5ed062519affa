"""Architecture rules of DESIGN.md §3 checked on the source (tests/layout.py), on what the
supervisor process really loads, and on the shape of msd/; the systemd unit."""
import ast
import re
import shutil
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

from tests.layout import (
    SUPERVISOR_MSD, SUPERVISOR_THIRD_PARTY, all_classes, load_tree, supervisor_violations, violations, within,
)

ROOT = Path(__file__).resolve().parents[2]
MSD = ROOT / "msd"


def test_every_layering_rule_holds():
    assert violations(ROOT) == []


# --- the checker finds what it must (each case is an import the old layout had) ----------------

def plant(tmp_path: Path, files: dict[str, str]) -> Path:
    """A copy of msd/ with `files` (path -> source) added or replaced."""
    shutil.copytree(MSD, tmp_path / "msd", ignore=shutil.ignore_patterns("__pycache__"))
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return tmp_path


@pytest.mark.parametrize("files, expected", [
    # the supervisor reaching the domain through the config (supervisor -> config -> rules)
    ({"msd/config/__init__.py": (MSD / "config" / "__init__.py").read_text() + "\nfrom msd.rules.config import ExitRules\n"},
     "the supervisor process loads msd.rules.config"),
    # ... or lazily, inside a function
    ({"msd/supervisor/status.py": (MSD / "supervisor" / "status.py").read_text()
      + "\ndef f():\n    from msd.strategies import engine\n"}, "the supervisor process loads msd.strategies.engine"),
    # ... or through `from msd import x`, or through a relative import
    ({"msd/supervisor/status.py": (MSD / "supervisor" / "status.py").read_text() + "\nfrom msd import store\n"},
     "the supervisor process loads msd.store"),
    ({"msd/supervisor/status.py": (MSD / "supervisor" / "status.py").read_text() + "\nfrom ..roles import runtime\n"},
     "the supervisor process loads msd.roles.runtime"),
    ({"msd/supervisor/status.py": (MSD / "supervisor" / "status.py").read_text() + "\nimport numpy\n"},
     "the supervisor process loads numpy"),
    # production code depending on the paper exchange
    ({"msd/store/shared_writes.py": "from msd.sim.position_manager import PositionState\n"},
     "no production package imports the paper exchange: msd.store.shared_writes imports msd.sim.position_manager"),
    # the sim using private helpers of bus
    ({"msd/sim/signals.py": "from msd.bus.signal_format import _lax_decimal\n"},
     "the paper exchange uses private names: msd.sim.signals imports msd.bus.signal_format._lax_decimal"),
    # edges knowing each other
    ({"msd/store/market.py": "from msd.bus.codecs import trace_id_header\n"},
     "the edges do not know each other: msd.store.market imports msd.bus.codecs"),
    ({"msd/store/market.py": "from ..bus import codecs\n"}, "the edges do not know each other: msd.store.market imports msd.bus"),
    # the store returning domain types (issue #13: datasets.py imported learning's Decision)
    ({"msd/store/datasets.py": "from msd.learning.outcomes import Decision\n"},
     "the store knows no domain: msd.store.datasets imports msd.learning"),
    # the rules reaching outside the standard library and the neutral module
    ({"msd/rules/pacing.py": "from msd.errors import ConfigError\n"},
     "rules import the standard library, the neutral values module and the exchange rules only: "
     "msd.rules.pacing imports msd.errors"),
    ({"msd/rules/pacing.py": "from ..strategies import engine\n"},
     "rules import the standard library, the neutral values module and the exchange rules only: "
     "msd.rules.pacing imports msd.strategies"),
    # the exchange rules leaning on a layer
    ({"msd/exchange/orders.py": "from msd.market.state import MarketSnapshot\n"},
     "the exchange rules import the standard library and the neutral values module only: "
     "msd.exchange.orders imports msd.market"),
    # ml doing I/O
    ({"msd/ml/features.py": "from msd.store import db\n"}, "ml imports no I/O package"),
    ({"msd/ml/features.py": "import socket\n"}, "ml imports no I/O package"),
    # the neutral module leaning on a layer
    ({"msd/values/parsing.py": "from msd.errors import ConfigError\n"},
     "the neutral values module imports the standard library only: msd.values.parsing imports msd.errors"),
    # I/O libraries outside their edge
    ({"msd/strategies/engine.py": "import pika\n"}, "only bus touches pika: msd.strategies.engine imports pika"),
    ({"msd/learning/job.py": "import psycopg2\n"}, "only store touches the database driver: msd.learning.job imports psycopg2"),
    # wiring outside roles
    ({"msd/learning/job.py": "from msd.bus import publisher\nfrom msd.store import db\n"},
     "only roles wire the edges together: msd.learning.job imports both msd.bus and msd.store"),
    ({"msd/strategies/emit.py": "from msd.roles.runtime import outbox\n"},
     "only roles (and the entry points) import roles: msd.strategies.emit imports msd.roles"),
    # the backtest touching msd's database (it must never write to msd's schema)
    ({"msd/backtest/replay.py": "from msd.store import db\n"},
     "the backtest reaches no edge, no wiring and no paper exchange: msd.backtest.replay imports msd.store"),
    ({"msd/market/state.py": "from msd.bus.messages import Kline\n"},
     "the domain reaches no broker and no wiring: msd.market.state imports msd.bus"),
])
def test_the_checker_finds_a_broken_rule(tmp_path, files, expected):
    found = violations(plant(tmp_path, files))
    assert any(line.startswith(expected) for line in found), found


def test_relative_and_from_package_imports_are_resolved(tmp_path):
    root = plant(tmp_path, {"msd/sim/extra.py": "from . import market\nfrom .. import store\nfrom msd import bus\n"})
    assert {"msd.sim.market", "msd.store", "msd.bus"} <= load_tree(root)["msd.sim.extra"].imports


def test_supervisor_closure_follows_indirect_imports(tmp_path):
    # daemon -> arbiter -> config -> a domain module two steps away
    root = plant(tmp_path, {"msd/config/reader.py": (MSD / "config" / "reader.py").read_text()
                            + "\nfrom msd.learning import triggers\n"})
    assert "the supervisor process loads msd.learning.triggers" in supervisor_violations(load_tree(root))


# --- what the supervisor process really loads ----------------------------------------------------

def test_supervisor_process_loads_only_what_design_allows():
    """Importing everything the supervisor runs (msd run's modules) and listing sys.modules."""
    code = textwrap.dedent("""
        import sys
        before = set(sys.modules)
        import msd.cli, msd.supervisor.daemon
        new = set(sys.modules) - before
        print("msd", *sorted(m for m in new if m == "msd" or m.startswith("msd.")))
        print("other", *sorted({m.split(".")[0] for m in new} - set(sys.stdlib_module_names) - {"msd"}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in out.stdout.splitlines())
    msd_modules, others = lines["msd"].split(), lines["other"].split()
    assert "msd.supervisor.daemon" in msd_modules and "yaml" in others          # the listing works
    assert [m for m in msd_modules if not (m in SUPERVISOR_MSD or within(m, "msd.supervisor"))] == [], msd_modules
    # `__mp_main__` is multiprocessing's alias of the main module; `_cython_*`/`cython_runtime`
    # are registered by PyYAML's compiled loader.
    third_party = {m for m in others if not re.match(r"^(__\w+__|_cython_\w+|cython_runtime)$", m)}
    assert third_party <= SUPERVISOR_THIRD_PARTY, third_party


# --- the shape of msd/ ---------------------------------------------------------------------------

def test_the_msd_package_itself_is_empty():
    assert (MSD / "__init__.py").read_text().strip() == ""


def test_roles_holds_the_four_role_packages_the_lease_child_and_the_shared_runtime():
    roles = MSD / "roles"
    entries = {p.name for p in roles.iterdir() if p.name != "__pycache__"}
    assert entries == {"__init__.py", "consumer", "signaller", "exits", "trainer", "lease", "runtime"}
    assert (roles / "__init__.py").read_text().strip() == ""
    # The lease child's section (`leadership`) is the supervisor's own: it has no config module.
    lease = ast.parse((roles / "lease" / "main.py").read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in lease.body)
    for role in ("consumer", "signaller", "exits", "trainer"):
        main = ast.parse((roles / role / "main.py").read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in main.body), role   # its main loop
        assert (roles / role / "config.py").exists(), role                                      # its section


def test_class_names_are_unique_across_msd():
    where = defaultdict(list)
    for name, path in all_classes(ROOT):
        where[name].append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}


# Known to exceed the guide's ~400 lines, with the size they may not grow beyond. rules/types.py
# holds ExitState and its stored form; it is being changed by the exit-expiry work and is split
# once that has landed, not under it.
OVERSIZED = {"msd/rules/types.py": 450}


def test_modules_stay_small():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in MSD.rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > OVERSIZED.get(path, 400)} == {}


# --- one place per concept (issue #11, point 6) --------------------------------------------------

CONCEPT_FUNCTIONS = ("float_or_nan", "decision_price", "one_way_costs", "feature_matrix", "epoch_microseconds",
                     "to_decimal", "finite_decimal", "finite_float", "parse_decimal", "parse_time", "parse_timestamp",
                     "check_aware", "from_iso", "from_epoch", "plain_decimal", "decimal_text", "plain",
                     "trace_id_header", "take", "would_allow", "full_bucket", "available_tokens",
                     "check_keys", "is_real_number", "_drop", "open_database", "serve_publishing_role")


def _definitions() -> dict[str, list[str]]:
    found = defaultdict(list)
    for path in MSD.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found[node.name].append(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("function", CONCEPT_FUNCTIONS)
def test_each_concept_function_is_defined_once(function):
    assert len(_definitions().get(function, [])) <= 1, _definitions()[function]


def _calls(predicate) -> set[str]:
    """Modules (relative paths) with a call or name matching `predicate(node, source)`."""
    hits = set()
    for path in MSD.rglob("*.py"):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if predicate(node, source):
                hits.add(str(path.relative_to(ROOT)))
    return hits


def test_one_token_bucket():
    def bucket_like(node, _source):
        return isinstance(node, ast.ClassDef) and any(
            isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and s.target.id in ("burst", "tokens")
            for s in node.body)
    assert _calls(bucket_like) == {"msd/values/bucket.py"}


def test_one_decimal_and_timestamp_parser():
    def parses(node, source):
        if isinstance(node, ast.Name) and node.id == "InvalidOperation":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "fromisoformat":
            return True
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Decimal"
                and node.args and isinstance(node.args[0], ast.Call) and isinstance(node.args[0].func, ast.Name)
                and node.args[0].func.id in ("str", "repr"))
    assert _calls(parses) == {"msd/values/parsing.py"}


def test_one_trace_id_header_decoder():
    def reads_header(node, source):
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "trace_id"
                and "headers" in (ast.get_source_segment(source, node.func.value) or ""))
    assert _calls(reads_header) == {"msd/bus/codecs.py"}


def test_roles_open_their_connections_in_one_place():
    def opens(node, _source):
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("Database", "ConfirmingPublisher"))
    assert {p for p in _calls(opens) if p.startswith("msd/roles/")} == {
        "msd/roles/runtime/edges.py", "msd/roles/runtime/publishing.py"}


def test_one_models_module():
    assert sorted(str(p.relative_to(ROOT)) for p in MSD.rglob("models.py")) == ["msd/ml/models.py"]


# --- the section map is what the roles declare -------------------------------------------------------

SECTIONS = ("control", "metrics", "logging", "database", "rabbitmq", "supervisor", "consumer", "signaller", "exits",
            "trainer")


def _config_reads(package: Path) -> set[str]:
    """`<...>config.<section>` (and `.<key>` after it) attribute chains read in a role package."""
    reads = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            owner = node.value if isinstance(node, ast.Attribute) else None
            owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            if node.__class__ is ast.Attribute and node.attr in SECTIONS and owner_name in ("config", "cfg"):
                parent = parents.get(node)
                reads.add(f"{node.attr}.{parent.attr}" if isinstance(parent, ast.Attribute) else node.attr)
    return reads


def _declared(parts: frozenset[str], read: str) -> bool:
    section = read.split(".")[0]
    return section in parts or read in parts


@pytest.mark.parametrize("role", ["consumer", "signaller", "exits", "trainer"])
def test_roles_read_only_the_parts_they_declare(role):
    """The reload's section map comes from these declarations (msd.roles.runtime.reload): a role
    reading an undeclared part would be neither restarted nor told when it changes."""
    from msd.roles.runtime.reload import ROLE_READS
    reads = _config_reads(MSD / "roles" / role)
    assert reads and {r for r in reads if not _declared(ROLE_READS[role].parts, r)} == set()


def test_the_declaration_check_sees_an_undeclared_read():
    """The old consumer: it read signaller.strategies without declaring it."""
    from msd.roles.runtime.reload import ROLE_READS
    reads = _config_reads(MSD / "roles" / "consumer")
    assert "signaller.strategies" in reads
    assert not _declared(ROLE_READS["consumer"].parts - {"signaller.strategies"}, "signaller.strategies")


UNIT = ROOT / "systemd" / "model-service.service"


@pytest.mark.parametrize("directive", [
    "Type=notify", "NotifyAccess=main", "KillMode=mixed", "WatchdogSec=", "ExecReload=", "RuntimeDirectory=",
    "User=msd", "ProtectSystem=strict", "ReadWritePaths=/opt/msd/var/models", "NoNewPrivileges=yes",
])
def test_unit_has_directive(directive):
    assert any(line.startswith(directive) for line in UNIT.read_text().splitlines())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # The unit names the install location; verify a copy pointing at this checkout, whose
    # virtualenv has the msd entry point (systemd-analyze checks ExecStart is executable).
    unit = tmp_path / "model-service.service"
    unit.write_text(UNIT.read_text().replace("/opt/msd", str(ROOT)))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "model-service.service" not in out.stderr, out.stderr
