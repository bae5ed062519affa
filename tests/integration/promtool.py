"""`promtool check metrics` (Debian's `prometheus` package; `.ci/run` installs it).

A missing promtool is a failure, never a skip: the check is part of what the suite promises.
"""
import shutil
import subprocess


def check_metrics(exposition: bytes) -> str:
    """promtool's complaints about a scrape (empty when it is clean)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install Debian's `prometheus` package (apt-get install prometheus)"
    out = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60)
    problems = (out.stdout + out.stderr).decode().strip()
    assert out.returncode == 0 or problems, f"promtool exited {out.returncode} without saying why"
    return problems
