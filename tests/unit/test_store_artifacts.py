"""Model artifacts on disk: atomic write, hash-checked load without pickle, retention."""
import json

import numpy as np
import pytest

from msd.ml.models import LogisticModel
from msd.ml.synthetic import make_dataset
from msd.store.artifacts import (MANIFEST_FILE, MODEL_FILE, ArtifactExists, TamperedArtifact,
                                 load_version, prune, stored_versions, write_version)


@pytest.fixture
def model_arrays():
    data = make_dataset(300, seed=3)
    return LogisticModel().fit(data.X, data.y).to_arrays()


def test_written_version_loads_back_identical(tmp_path, model_arrays):
    ref = write_version(tmp_path, "momentum_v1", 1, model_arrays, {"feature_names": ["a"]})

    arrays, manifest = load_version(ref.path, ref.sha256, ref.manifest_sha256)

    assert ref.path == tmp_path / "momentum_v1" / "v1"
    assert sorted(p.name for p in ref.path.iterdir()) == [MANIFEST_FILE, MODEL_FILE]
    assert manifest == {"feature_names": ["a"], "sha256": ref.sha256}
    for name, value in model_arrays.items():
        np.testing.assert_array_equal(arrays[name], value)
    restored = LogisticModel.from_arrays(arrays)
    np.testing.assert_array_equal(restored.coef, LogisticModel.from_arrays(model_arrays).coef)
    # no temporary directory is left behind next to the version
    assert [p.name for p in (tmp_path / "momentum_v1").iterdir()] == ["v1"]


def test_modified_npz_is_refused_as_tampered(tmp_path, model_arrays):
    ref = write_version(tmp_path, "momentum_v1", 1, model_arrays, {})
    path = ref.path / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(TamperedArtifact, match=str(path)) as caught:
        load_version(ref.path, ref.sha256)
    assert caught.value.expected == ref.sha256 and caught.value.actual != ref.sha256


def test_modified_manifest_is_refused_as_tampered(tmp_path, model_arrays):
    ref = write_version(tmp_path, "momentum_v1", 1, model_arrays, {"feature_names": ["a", "b"]})
    manifest_path = ref.path / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["feature_names"] = ["b", "a"]
    manifest_path.write_text(json.dumps(manifest))

    with pytest.raises(TamperedArtifact, match=MANIFEST_FILE):
        load_version(ref.path, ref.sha256, ref.manifest_sha256)


def test_object_arrays_are_refused_so_nothing_is_pickled(tmp_path):
    with pytest.raises(ValueError, match="object dtype"):
        write_version(tmp_path, "momentum_v1", 1, {"coef": np.array([{"x": 1}])}, {})
    assert stored_versions(tmp_path, "momentum_v1") == []


def test_existing_version_is_never_overwritten(tmp_path, model_arrays):
    ref = write_version(tmp_path, "momentum_v1", 1, model_arrays, {})
    with pytest.raises(ArtifactExists):
        write_version(tmp_path, "momentum_v1", 1, model_arrays, {"other": True})
    assert load_version(ref.path, ref.sha256)[1] == {"sha256": ref.sha256}


def test_strategy_names_cannot_leave_the_models_directory(tmp_path, model_arrays):
    with pytest.raises(ValueError, match="strategy"):
        write_version(tmp_path, "../escape", 1, model_arrays, {})


def test_prune_keeps_the_newest_and_every_protected_version(tmp_path, model_arrays):
    for version in range(1, 8):
        write_version(tmp_path, "momentum_v1", version, model_arrays, {})

    removed = prune(tmp_path, "momentum_v1", keep=2, protected_versions={2, 4})

    assert removed == [1, 3, 5]
    assert stored_versions(tmp_path, "momentum_v1") == [2, 4, 6, 7]
