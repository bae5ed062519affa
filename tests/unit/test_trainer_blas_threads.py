"""The trainer process runs OpenBLAS with one thread (its matrices have 9 columns; on busy cores
OpenBLAS's threads spun against each other: a 65,536 x 30 product took 0.4 s instead of 7 ms).
The setting only works if numpy is not loaded before msd.roles.trainer.main sets it."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True, timeout=120).stdout.strip()


def test_trainer_module_sets_one_blas_thread_before_numpy_loads():
    # what a spawned child loads before the role's module: the spawn entry and role runtime
    code = ("import sys, importlib, msd.supervisor.spawn as s; importlib.import_module(s.ROLE_RUNTIME);"
            "before = 'numpy' in sys.modules; import os, msd.roles.trainer.main;"
            "print(before, os.environ.get('OPENBLAS_NUM_THREADS'))")
    assert _run(code) == "False 1"


def test_an_operator_setting_is_kept():
    code = ("import os; os.environ['OPENBLAS_NUM_THREADS'] = '2'; import msd.roles.trainer.main;"
            "print(os.environ['OPENBLAS_NUM_THREADS'])")
    assert _run(code) == "2"
