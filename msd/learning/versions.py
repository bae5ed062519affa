"""Loading a stored version as the signaller, the trainer and msd-ctl serve it."""
from __future__ import annotations

from msd.errors import MsdError
from msd.ml.calibration import CalibratedModel
from msd.ml.features import FEATURE_NAMES, FEATURE_VERSION, LABELS
from msd.store.artifacts import load_version
from msd.store.versions import VersionInfo

MODEL_CLASS = "CalibratedModel"


def load_model(info: VersionInfo) -> CalibratedModel:
    """A version's model after checking its hashes and that it was built for today's features
    (names, FEATURE_VERSION) and labels.

    Raises TamperedArtifact (an MsdError), MsdError for another feature recipe or model class,
    OSError for missing files and ValueError for malformed arrays (including another array
    format); the caller decides what refusal means.
    """
    arrays, manifest = load_version(info.path, info.sha256, info.manifest_sha256)
    where = f"v{info.version}"
    if manifest.get("feature_names") != list(FEATURE_NAMES):
        raise MsdError(f"{where}: feature names {manifest.get('feature_names')} differ from "
                       f"{list(FEATURE_NAMES)}")
    versions = {manifest.get("feature_version"), info.feature_version}
    if versions != {FEATURE_VERSION}:
        raise MsdError(f"{where}: feature version {sorted(map(str, versions))} differs from "
                       f"{FEATURE_VERSION!r}")
    if manifest.get("label_mapping") != dict(LABELS):
        raise MsdError(f"{where}: label mapping {manifest.get('label_mapping')} differs from "
                       f"{dict(LABELS)}")
    if manifest.get("model_class") != MODEL_CLASS:
        raise MsdError(f"{where}: model class {manifest.get('model_class')!r} is not "
                       f"{MODEL_CLASS!r}")
    return CalibratedModel.from_arrays(arrays)
