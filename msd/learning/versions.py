"""Loading a stored version as the signaller, the trainer and msd-ctl serve it, and choosing
the version a degraded one falls back to."""
from __future__ import annotations

from typing import Any, Mapping

from msd.errors import MsdError
from msd.ml.calibration import CalibratedModel
from msd.ml.features import FEATURE_NAMES, FEATURE_VERSION, LABELS
from msd.ml.params import TrainingParams
from msd.store.artifacts import load_version
from msd.store.versions import VersionInfo, good_versions

MODEL_CLASS = "CalibratedModel"
# What an outcome label means: a version trained on another horizon or cost floor predicts
# "pays after costs" for another question, so its confidence would not mean what msd says.
LABEL_DEFINITION = ("horizon_s", "round_trip_fee_pct")
LOAD_ERRORS = (MsdError, OSError, ValueError, KeyError)


def label_definition_mismatch(training_config: Mapping[str, Any] | None,
                              expected: TrainingParams) -> str | None:
    """Why a version's label definition differs from `expected`, or None when it matches."""
    stored = dict(training_config or {})
    differences = []
    for key in LABEL_DEFINITION:
        value, wanted = stored.get(key), getattr(expected, key)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                and abs(float(value) - float(wanted)) <= 1e-9 * max(1.0, abs(float(wanted)))):
            differences.append(f"{key} {value!r} (config {wanted!r})")
    return None if not differences else "label definition differs: " + ", ".join(differences)


def load_model(info: VersionInfo, expected: TrainingParams | None = None) -> CalibratedModel:
    """A version's model after checking its hashes and that it was built for today's features
    (names, FEATURE_VERSION), labels and, given `expected`, the configured label definition
    (horizon and cost floor).

    Raises TamperedArtifact (an MsdError), MsdError for another feature recipe, label
    definition or model class, OSError for missing files and ValueError for malformed arrays
    (including another array format); the caller decides what refusal means.
    """
    where = f"v{info.version}"
    if expected is not None:
        mismatch = label_definition_mismatch(info.training_config, expected)
        if mismatch:
            raise MsdError(f"{where}: {mismatch}")
    arrays, manifest = load_version(info.path, info.sha256, info.manifest_sha256)
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


def fallback_version(conn, strategy_id: str, expected: TrainingParams,
                     skip: int | None = None) -> tuple[VersionInfo | None, list[str]]:
    """The newest good version (msd.store.versions.good_versions) other than `skip` that
    loads with today's features, array format, label mapping and label definition, and the
    reasons the newer ones were passed over. (None, reasons) when none loads: the caller must
    then stop serving a model rather than keep a degraded one."""
    passed_over = []
    for info in good_versions(conn, strategy_id, FEATURE_VERSION, dict(LABELS)):
        if info.version == skip:
            continue
        try:
            load_model(info, expected)
        except LOAD_ERRORS as exc:
            passed_over.append(f"v{info.version} not loadable: {exc}")
            continue
        return info, passed_over
    return None, passed_over
