"""Model version metadata, quality metrics, activation/rollback and the mode audit trail.

Rows are never deleted (SC-006): retention removes artifact files and marks the row. Every
activation, rollback and mode change writes a `msd.mode_transitions` row in the same
transaction as the change it records, with the figures that justified it, through
`msd.store.modes.record_transition` (the signaller's warm-up rows go the same way). All
functions run in the caller's transaction.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from msd.errors import MsdError
from msd.store.jsonb import to_json
from msd.store.modes import latest_modes, record_transition
from msd.store.pauses import end_budget_pause, start_budget
from msd.values.parsing import check_aware

# Serialises version numbering and activation per strategy (second key: hash of the id).
VERSION_LOCK_KEY = 0x6D7364_0003


class VersionError(MsdError):
    """A version cannot be activated or compared (absent, or its files were pruned)."""


@dataclass(frozen=True)
class NewVersion:
    strategy_id: str
    version: int
    path: str
    sha256: str
    manifest_sha256: str
    model_type: str
    feature_version: str
    feature_names: Sequence[str]
    label_mapping: Mapping[str, int]
    training_config: Mapping[str, Any]
    metrics: Mapping[str, Any]
    promoted_when_trained: bool
    gate_reasons: Sequence[str]
    labelled_rows: int
    validation_from: datetime | None = None
    validation_to: datetime | None = None
    training_run_id: int | None = None


@dataclass(frozen=True)
class VersionInfo:
    id: int
    strategy_id: str
    version: int
    path: str
    sha256: str
    manifest_sha256: str | None
    model_type: str
    feature_version: str
    feature_names: list
    label_mapping: dict
    training_config: dict
    metrics: dict
    promoted_when_trained: bool
    gate_reasons: list
    is_active: bool
    labelled_rows: int
    validation_from: datetime | None
    validation_to: datetime | None
    created_at: datetime
    activated_at: datetime | None
    files_pruned_at: datetime | None
    training_run_id: int | None
    retired_at: datetime | None = None
    retired_reason: str | None = None
    quality: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # window -> name -> value


_COLUMNS = tuple(f.name for f in fields(VersionInfo) if f.name != "quality")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM msd.model_versions"


def lock_strategy(conn, strategy_id: str) -> None:
    """Hold the strategy's version lock until the caller's transaction ends."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    (VERSION_LOCK_KEY & 0x7FFFFFFF, strategy_id))


def reserve_version(conn, strategy_id: str) -> int:
    """The next version number of the strategy; the lock holds it until the row is inserted
    in the same transaction, so two trainers can never number alike."""
    lock_strategy(conn, strategy_id)
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(version), 0) + 1 FROM msd.model_versions"
                    " WHERE strategy_id = %s", (strategy_id,))
        return cur.fetchone()[0]


def insert_version(conn, new: NewVersion) -> int:
    """Insert the version's row; returns its id."""
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO msd.model_versions
                   (strategy_id, version, path, sha256, manifest_sha256, model_type,
                    feature_version, feature_names, label_mapping, training_config, metrics,
                    promoted_when_trained, gate_reasons, labelled_rows, validation_from,
                    validation_to, training_run_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s::jsonb,
                       %s, %s::jsonb, %s, %s, %s, %s)
               RETURNING id""",
            (new.strategy_id, new.version, new.path, new.sha256, new.manifest_sha256,
             new.model_type, new.feature_version, to_json(list(new.feature_names)),
             to_json(dict(new.label_mapping)), to_json(dict(new.training_config)),
             to_json(dict(new.metrics)), new.promoted_when_trained,
             to_json(list(new.gate_reasons)), new.labelled_rows, new.validation_from,
             new.validation_to, new.training_run_id))
        return cur.fetchone()[0]


def record_quality_metrics(conn, model_version_id: int, figures: Mapping[str, float],
                           window: str, sample_count: int | None) -> int:
    """One `msd.quality_metrics` row per figure (baselines under their `majority.`/`naive.`
    prefixes); returns the number of rows."""
    rows = [(model_version_id, name, float(value), window, sample_count)
            for name, value in sorted(figures.items())]
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO msd.quality_metrics (model_version_id, metric_name, value,
                                                 evaluation_window, sample_count)
               VALUES (%s, %s, %s, %s, %s)""", rows)
    return len(rows)


def list_versions(conn, strategy_id: str, *, with_quality: bool = True) -> list[VersionInfo]:
    """Every version of the strategy, oldest first, with its quality metrics."""
    with conn.cursor() as cur:
        cur.execute(f"{_SELECT} WHERE strategy_id = %s ORDER BY version", (strategy_id,))
        versions = [VersionInfo(*row) for row in cur.fetchall()]
    if not with_quality or not versions:
        return versions
    quality = _quality_of(conn, [v.id for v in versions])
    return [_with_quality(v, quality.get(v.id, {})) for v in versions]


def get_version(conn, strategy_id: str, version: int) -> VersionInfo | None:
    with conn.cursor() as cur:
        cur.execute(f"{_SELECT} WHERE strategy_id = %s AND version = %s", (strategy_id, version))
        row = cur.fetchone()
    if row is None:
        return None
    info = VersionInfo(*row)
    return _with_quality(info, _quality_of(conn, [info.id]).get(info.id, {}))


def get_active(conn, strategy_id: str) -> VersionInfo | None:
    with conn.cursor() as cur:
        cur.execute("SELECT version FROM msd.model_versions"
                    " WHERE strategy_id = %s AND is_active", (strategy_id,))
        row = cur.fetchone()
    return get_version(conn, strategy_id, row[0]) if row else None


def latest_version(conn, strategy_id: str) -> VersionInfo | None:
    with conn.cursor() as cur:
        cur.execute("SELECT max(version) FROM msd.model_versions WHERE strategy_id = %s",
                    (strategy_id,))
        number = cur.fetchone()[0]
    return None if number is None else get_version(conn, strategy_id, number)


# A version a fall-back may return to: good enough to serve once (promoted when trained, or
# active at some time), not active now, never retired for degraded live quality, files kept.
_GOOD = """strategy_id = %(strategy)s AND NOT is_active AND files_pruned_at IS NULL
           AND retired_at IS NULL AND (promoted_when_trained OR activated_at IS NOT NULL)
           AND (%(feature_version)s::text IS NULL OR feature_version = %(feature_version)s::text)
           AND (%(labels)s::jsonb IS NULL OR label_mapping = %(labels)s::jsonb)"""


def last_good(conn, strategy_id: str, feature_version: str | None = None,
              label_mapping: Mapping[str, int] | None = None) -> int | None:
    """The newest good version (see _GOOD; optionally only of that feature version and label
    mapping): retention keeps it. Whether it still loads is msd.learning.versions'
    `fallback_version`, which is what a fall-back uses."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT max(version) FROM msd.model_versions WHERE {_GOOD}",
                    _good_params(strategy_id, feature_version, label_mapping))
        return cur.fetchone()[0]


def good_versions(conn, strategy_id: str, feature_version: str | None = None,
                  label_mapping: Mapping[str, int] | None = None) -> list[VersionInfo]:
    """Every good version (see _GOOD), newest first, without quality figures."""
    with conn.cursor() as cur:
        cur.execute(f"{_SELECT} WHERE {_GOOD} ORDER BY version DESC",
                    _good_params(strategy_id, feature_version, label_mapping))
        return [VersionInfo(*row) for row in cur.fetchall()]


def _good_params(strategy_id: str, feature_version: str | None,
                 label_mapping: Mapping[str, int] | None) -> dict[str, Any]:
    return {"strategy": strategy_id, "feature_version": feature_version,
            "labels": None if label_mapping is None else to_json(dict(label_mapping))}


def retire(conn, strategy_id: str, version: int, reason: str, *, now: datetime) -> bool:
    """Mark a version as retired for degraded live quality (never a fall-back again) at `now`,
    the caller's clock: the lifecycle compares it with the last training's time."""
    with conn.cursor() as cur:
        cur.execute("""UPDATE msd.model_versions SET retired_at = %s, retired_reason = %s
                        WHERE strategy_id = %s AND version = %s AND retired_at IS NULL""",
                    (check_aware("now", now), reason, strategy_id, version))
        return cur.rowcount == 1


def latest_retirements(conn) -> dict[str, datetime]:
    """Per strategy, when its most recent version was retired for degradation."""
    with conn.cursor() as cur:
        cur.execute("""SELECT strategy_id, max(retired_at) FROM msd.model_versions
                        WHERE retired_at IS NOT NULL GROUP BY strategy_id""")
        return dict(cur.fetchall())


def active_versions(conn) -> dict[str, int]:
    """{strategy: active version} for every strategy that has one (one cheap query)."""
    with conn.cursor() as cur:
        cur.execute("SELECT strategy_id, version FROM msd.model_versions WHERE is_active")
        return dict(cur.fetchall())


def current_mode(conn, strategy_id: str) -> str:
    """The strategy's mode per the audit trail: a strategy never switched is warming up."""
    record = latest_modes(conn).get(strategy_id)
    return record.mode if record else "warmup"


def activate(conn, strategy_id: str, version: int, *, reason: str, now: datetime,
             evidence: Mapping[str, Any], event: str = "activation") -> int:
    """Make `version` the strategy's only active version at `now` (the caller's clock: its live
    record starts there) and audit it; returns the transition id. `evidence` (the metrics and
    checks that justified it) goes into the audit row."""
    now = check_aware("now", now)
    lock_strategy(conn, strategy_id)
    target = get_version(conn, strategy_id, version)
    if target is None:
        raise VersionError(f"version: v{version} of {strategy_id!r} does not exist")
    if target.files_pruned_at is not None:
        raise VersionError(f"version: v{version} of {strategy_id!r} has no files (pruned at "
                           f"{target.files_pruned_at.isoformat()}); it cannot be activated")
    previous = get_active(conn, strategy_id)
    with conn.cursor() as cur:
        cur.execute("UPDATE msd.model_versions SET is_active = false"
                    " WHERE strategy_id = %s AND is_active", (strategy_id,))
        cur.execute("UPDATE msd.model_versions SET is_active = true, activated_at = %s"
                    " WHERE strategy_id = %s AND version = %s", (now, strategy_id, version))
    parameters = {**evidence, "previous_version": previous.version if previous else None}
    from_mode = current_mode(conn, strategy_id)
    # A model serving ends a pause for a spent warm-up budget (not one an operator asked for).
    end_budget_pause(conn, strategy_id)
    return record_transition(conn, strategy_id, from_mode, "model", reason, parameters, version,
                             event=event)


def rollback(conn, strategy_id: str, to_version: int, *, reason: str, now: datetime) -> int:
    """Activate an earlier version again; its stored validation figures are the evidence."""
    target = get_version(conn, strategy_id, to_version)
    if target is None:
        raise VersionError(f"to_version: v{to_version} of {strategy_id!r} does not exist")
    evidence = {"metrics": dict(target.quality.get("validation", {})),
                "promoted_when_trained": target.promoted_when_trained}
    return activate(conn, strategy_id, to_version, reason=reason, now=now, evidence=evidence,
                    event="rollback")


def deactivate(conn, strategy_id: str, *, reason: str, now: datetime,
               evidence: Mapping[str, Any] | None = None) -> int | None:
    """No active version any more: the strategy falls back to warm-up with a new warm-up
    budget starting at `now` (the caller's clock). None if none was."""
    lock_strategy(conn, strategy_id)
    previous = get_active(conn, strategy_id)
    if previous is None:
        return None
    with conn.cursor() as cur:
        cur.execute("UPDATE msd.model_versions SET is_active = false"
                    " WHERE strategy_id = %s AND is_active", (strategy_id,))
    # Back in warm-up: a new budget starts now, in the same transaction as the audit row (the
    # signaller sees a warm-up row already and would otherwise keep the old, spent budget).
    start_budget(conn, strategy_id, f"back in warm-up: {reason}", now=now)
    return record_transition(conn, strategy_id, current_mode(conn, strategy_id), "warmup", reason,
                             {**(evidence or {}), "previous_version": previous.version},
                             previous.version, event="deactivation")


def mark_files_pruned(conn, strategy_id: str, versions: Iterable[int]) -> int:
    with conn.cursor() as cur:
        cur.execute("""UPDATE msd.model_versions SET files_pruned_at = now()
                        WHERE strategy_id = %s AND version = ANY(%s)
                          AND files_pruned_at IS NULL""", (strategy_id, list(versions)))
        return cur.rowcount


def record_training_outcome(conn, strategy_id: str, outcome: str, reason: str, *, at: datetime,
                            request_id: str | None = None, model_version: int | None = None,
                            detail: Mapping[str, Any] | None = None,
                            training_run_id: int | None = None) -> int:
    """Audit one strategy's training attempt: 'trained' or 'skipped' (with why). `at` is the
    event time of the attempt (when its data were read, by the caller's clock), never the time
    of the insert: the data-threshold count starts again from it."""
    check_aware("at", at)
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO msd.training_outcomes (training_run_id, request_id, strategy_id,
                                                   outcome, reason, model_version, detail, at)
               VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s) RETURNING id""",
            (training_run_id, request_id, strategy_id, outcome, reason, model_version,
             to_json(dict(detail or {})), at))
        return cur.fetchone()[0]


def training_outcomes(conn, strategy_id: str) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute("""SELECT id, training_run_id, request_id, outcome, reason, model_version,
                              detail, at
                         FROM msd.training_outcomes WHERE strategy_id = %s ORDER BY id""",
                    (strategy_id,))
        names = [d.name for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def _quality_of(conn, version_ids: list[int]) -> dict[int, dict[str, dict[str, float]]]:
    """Latest value per (version, window, metric)."""
    with conn.cursor() as cur:
        cur.execute("""SELECT DISTINCT ON (model_version_id, evaluation_window, metric_name)
                              model_version_id, evaluation_window, metric_name, value
                         FROM msd.quality_metrics WHERE model_version_id = ANY(%s)
                        ORDER BY model_version_id, evaluation_window, metric_name,
                                 evaluated_at DESC, id DESC""", (version_ids,))
        result: dict[int, dict[str, dict[str, float]]] = {}
        for version_id, window, name, value in cur.fetchall():
            result.setdefault(version_id, {}).setdefault(window, {})[name] = value
    return result


def _with_quality(info: VersionInfo, quality: Mapping[str, Mapping[str, float]]) -> VersionInfo:
    return VersionInfo(**{**{name: getattr(info, name) for name in _COLUMNS},
                          "quality": quality})


def latest_training_outcomes(conn) -> dict[str, dict[str, Any]]:
    """Each strategy's most recent training attempt: {"outcome", "reason", "at", "model_version"}."""
    with conn.cursor() as cur:
        cur.execute("""SELECT DISTINCT ON (strategy_id) strategy_id, outcome, reason, at, model_version
                         FROM msd.training_outcomes ORDER BY strategy_id, at DESC, id DESC""")
        return {sid: {"outcome": outcome, "reason": reason, "at": at.isoformat(), "model_version": version}
                for sid, outcome, reason, at, version in cur.fetchall()}
