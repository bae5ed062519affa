"""Architecture rules of DESIGN.md §3, checked on the source, and the systemd unit."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STDLIB = sys.stdlib_module_names

# package -> third-party/top-level modules it must not import
FORBIDDEN = {
    "msd/supervisor": {"numpy", "scipy", "statsmodels", "pika", "psycopg2"},
    "msd/ml": {"psycopg2", "pika", "watchdog", "prometheus_client", "msd.store", "msd.bus"},
    "msd/bus": {"psycopg2", "msd.store"},
}
ONLY_IN = {"pika": "msd/bus", "psycopg2": "msd/store"}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_in(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def hits(names: set[str], banned: set[str]) -> set[str]:
    return {n for n in names for b in banned if n == b or n.startswith(b + ".")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_forbidden_modules(package):
    for path in modules_in(package):
        assert not hits(imports_of(path), FORBIDDEN[package]), path


def test_rules_import_only_the_stdlib():
    for path in modules_in("msd/rules"):
        for name in imports_of(path):
            assert name.split(".")[0] in STDLIB or name.startswith(("msd.rules", "msd.values")), (path, name)


@pytest.mark.parametrize("module, home", sorted(ONLY_IN.items()))
def test_io_library_used_only_in_its_edge_package(module, home):
    for path in modules_in("msd"):
        if not str(path.relative_to(ROOT)).startswith(home):
            assert not hits(imports_of(path), {module}), path


def test_supervisor_process_does_not_load_heavy_modules():
    """Importing everything the supervisor runs must not pull numpy, pika or psycopg2 in."""
    code = ("import sys, msd.supervisor.daemon, msd.cli, msd.ctl; "
            "print(','.join(m for m in ('numpy','pika','psycopg2','scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


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
