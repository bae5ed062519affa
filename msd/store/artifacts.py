"""Model artifacts on disk: `<models_dir>/<strategy>/v<N>/{model.npz, manifest.json}`.

No pickle anywhere: arrays are `.npz` loaded with `allow_pickle=False` and the rest is JSON, so
loading a model never executes code (DESIGN §5). A version directory appears whole or not at
all: it is written under a temporary name in the same parent, fsynced, then renamed with
`os.replace`. The database row pins the files by sha256; a mismatch refuses to load.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from msd.errors import MsdError

MODEL_FILE = "model.npz"
MANIFEST_FILE = "manifest.json"
_VERSION_DIR = re.compile(r"^v(\d+)$")
# Strategy ids become directory names; anything that could climb out of models_dir is refused.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class TamperedArtifact(MsdError):
    """An artifact file does not match the sha256 recorded for it; it must not be loaded."""

    def __init__(self, path: Path, expected: str, actual: str):
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(f"artifact {path} refused: sha256 {actual} does not match the recorded "
                         f"{expected}")


class ArtifactExists(MsdError):
    """The version directory is already there; versions are never overwritten in place."""


@dataclass(frozen=True)
class ArtifactRef:
    path: Path                 # the version directory
    sha256: str                # of model.npz
    manifest_sha256: str       # of manifest.json


def strategy_dir(models_dir: Path | str, strategy: str) -> Path:
    if not (isinstance(strategy, str) and _SAFE_NAME.match(strategy)):
        raise ValueError(f"strategy: {strategy!r} is invalid; expected letters, digits, '_', "
                         "'.', '-' (not leading), at most 100 characters")
    return Path(models_dir) / strategy


def version_dir(models_dir: Path | str, strategy: str, version: int) -> Path:
    if not (isinstance(version, int) and version >= 1):
        raise ValueError(f"version: {version!r} is invalid; expected an int >= 1")
    return strategy_dir(models_dir, strategy) / f"v{version}"


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The `.npz` encoding of numeric arrays; object arrays are refused (they would pickle)."""
    for name, value in arrays.items():
        if np.asarray(value).dtype.hasobject:
            raise ValueError(f"arrays[{name!r}]: object dtype is invalid; expected numeric arrays")
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})
    return buffer.getvalue()


def write_version(models_dir: Path | str, strategy: str, version: int,
                  arrays: Mapping[str, np.ndarray], manifest: Mapping[str, Any]) -> ArtifactRef:
    """Write the version's files atomically; the manifest gets `sha256` of the arrays added."""
    target = version_dir(models_dir, strategy, version)
    if target.exists():
        raise ArtifactExists(f"{target} already exists; versions are never overwritten")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    data = npz_bytes(arrays)
    digest = hashlib.sha256(data).hexdigest()
    manifest_data = json.dumps({**manifest, "sha256": digest}, indent=2, sort_keys=True,
                               allow_nan=False).encode("utf-8")
    staging = Path(tempfile.mkdtemp(prefix=f".v{version}-", suffix=".tmp", dir=parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the version is for every reader
        _write_synced(staging / MODEL_FILE, data)
        _write_synced(staging / MANIFEST_FILE, manifest_data)
        _fsync_dir(staging)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(parent)  # the rename itself is durable only once the parent is synced
    return ArtifactRef(target, digest, hashlib.sha256(manifest_data).hexdigest())


def load_version(path: Path | str, expected_sha256: str,
                 expected_manifest_sha256: str | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, manifest) of a version directory, after checking the recorded hashes.

    The bytes that were hashed are the bytes that are parsed, so a file swapped between the
    check and the load cannot slip through.
    """
    directory = Path(path)
    data = _checked_bytes(directory / MODEL_FILE, expected_sha256)
    manifest_bytes = (directory / MANIFEST_FILE).read_bytes()
    if expected_manifest_sha256 is not None:
        _check(directory / MANIFEST_FILE, manifest_bytes, expected_manifest_sha256)
    manifest = json.loads(manifest_bytes)
    if manifest.get("sha256") != expected_sha256:
        raise TamperedArtifact(directory / MANIFEST_FILE, expected_sha256,
                               str(manifest.get("sha256")))
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return arrays, manifest


def stored_versions(models_dir: Path | str, strategy: str) -> list[int]:
    """Version numbers whose directories exist, ascending (temporary directories excluded)."""
    directory = strategy_dir(models_dir, strategy)
    if not directory.is_dir():
        return []
    found = (_VERSION_DIR.match(entry.name) for entry in directory.iterdir() if entry.is_dir())
    return sorted(int(match.group(1)) for match in found if match)


def prune(models_dir: Path | str, strategy: str, keep: int,
          protected_versions: Iterable[int]) -> list[int]:
    """Remove the files of all but the newest `keep` versions, never a protected one (the
    active and the last good version); returns the versions whose files were removed."""
    doomed = prune_plan(models_dir, strategy, keep, protected_versions)
    for version in doomed:
        remove_version_files(models_dir, strategy, version)
    return doomed


def prune_plan(models_dir: Path | str, strategy: str, keep: int,
               protected_versions: Iterable[int]) -> list[int]:
    """What `prune` would remove, so the caller can mark the rows before the files go."""
    if not (isinstance(keep, int) and keep >= 1):
        raise ValueError(f"keep: {keep!r} is invalid; expected an int >= 1")
    protected = set(protected_versions)
    return [v for v in stored_versions(models_dir, strategy)[:-keep] if v not in protected]


def remove_version_files(models_dir: Path | str, strategy: str, version: int) -> None:
    """Delete a version directory; renamed first so a half-deleted one never looks valid."""
    target = version_dir(models_dir, strategy, version)
    if not target.exists():
        return
    doomed = target.with_name(f".{target.name}-removing-{os.getpid()}.tmp")
    os.replace(target, doomed)
    shutil.rmtree(doomed)


def _checked_bytes(path: Path, expected: str) -> bytes:
    data = path.read_bytes()
    _check(path, data, expected)
    return data


def _check(path: Path, data: bytes, expected: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise TamperedArtifact(path, expected, actual)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


ONLINE_DIR = "online"


def save_online_state(models_dir: Path | str, strategy: str, arrays: Mapping[str, np.ndarray],
                      meta: Mapping[str, Any]) -> None:
    """The online learner of a strategy, replaced atomically (write to temp files, fsync, rename)."""
    directory = strategy_dir(models_dir, strategy) / ONLINE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in ((MODEL_FILE, npz_bytes(arrays)), (MANIFEST_FILE, json.dumps(dict(meta)).encode())):
        temporary = directory / f".{name}.tmp"
        _write_synced(temporary, data)
        os.replace(temporary, directory / name)
    _fsync_dir(directory)


def load_online_state(models_dir: Path | str, strategy: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """The saved online learner, or None when there is none yet."""
    directory = strategy_dir(models_dir, strategy) / ONLINE_DIR
    try:
        data = (directory / MODEL_FILE).read_bytes()
        meta = json.loads((directory / MANIFEST_FILE).read_bytes())
    except FileNotFoundError:
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}, meta
