"""msd.rules imports the standard library and itself only (DESIGN §3 dependency rules)."""
import ast
import sys
from pathlib import Path

import msd.rules

RULES_DIR = Path(msd.rules.__file__).parent


def _imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_rules_import_only_stdlib_and_msd_rules():
    offenders = []
    for path in sorted(RULES_DIR.glob("*.py")):
        for module in _imported_modules(path):
            top = module.split(".")[0]
            allowed = top in sys.stdlib_module_names or top == "__future__" or module.startswith("msd.rules")
            if not allowed:
                offenders.append(f"{path.name}: {module}")
    assert offenders == []
