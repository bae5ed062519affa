"""The trainer's section of the config file, validated by the learning code's own constructors,
and what the trainer reads. `trainer.timeout_s` is read with the file's shape (msd.config):
the supervisor polices that deadline."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from msd.config import SectionContext
from msd.config.domain import Reads, built
from msd.config.reader import Section
from msd.errors import ConfigError
from msd.learning.triggers import Schedule
from msd.ml.params import OnlineParams, TrainingParams

# The training job trains the configured strategies (signaller.strategies); the trainer is started
# per request with the running config, so nothing needs applying live.
READS = Reads(frozenset({"database", "trainer", "signaller.strategies"}))
DEFAULT_JOB = "msd.learning.job:train_strategies"
# Job paths of earlier versions, still accepted in existing configs.
JOB_ALIASES = {"msd.roles.trainer_jobs:train_strategies": DEFAULT_JOB,
               "msd.roles.trainer_jobs:summarise_executions": "msd.learning.job:summarise_executions"}


@dataclass(frozen=True)
class QualityConfig:
    """Live quality watch of model-mode strategies (FR-021): the share of the last `window`
    labelled model signals whose call paid after costs; below `threshold` -> alert, retire the
    version, fall back and retrain. Calibration (mean confidence vs that pay rate) is tracked
    beside it."""
    threshold: float
    hysteresis: float
    min_samples: int
    window: int
    max_calibration_gap: float      # |mean confidence - pay rate| beyond this: miscalibrated


@dataclass(frozen=True)
class TrainerConfig:
    job: str                        # "module:function" run inside the trainer process
    timeout_s: float
    training: TrainingParams        # what a training run does (models_dir is absolute)
    schedule: Schedule | None       # periodic retraining, None = off
    data_threshold: int | None      # N new labelled executions since the last training, None = off
    quality: QualityConfig
    check_interval_s: float         # how often the signaller checks the triggers
    online: OnlineParams = OnlineParams()   # the online challenger


def trainer_section(s: Section, context: SectionContext) -> TrainerConfig:
    job = s.string("job", DEFAULT_JOB)
    if job.count(":") != 1 or not all(job.split(":")):
        raise ConfigError("trainer.job", job, "a 'package.module:function' reference")
    job = JOB_ALIASES.get(job, job)
    threshold = s.raw("data_threshold", 500)
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1):
        raise ConfigError("trainer.data_threshold", threshold, "an integer >= 1, or null")
    s.raw("timeout_s", None)     # validated with the shape: context.trainer_timeout_s
    cfg = TrainerConfig(job=job, timeout_s=context.trainer_timeout_s,
                        training=_training(s.raw("training", {}), context.base),
                        schedule=_schedule(s.raw("schedule", {"daily_at": "02:00"})),
                        data_threshold=threshold, quality=_quality(s.section("quality")),
                        check_interval_s=s.number("check_interval_s", 10.0, lo=0.1, hi=3600),
                        online=_online(s.raw("online", {})))
    s.reject_unknown()
    return cfg


def _training(raw: Any, base: Path) -> TrainingParams:
    if not isinstance(raw, Mapping):
        raise ConfigError("trainer.training", raw, "a mapping of training parameters")
    values = dict(raw)
    models_dir = Path(str(values.get("models_dir", "../var/models")))
    values["models_dir"] = str(models_dir if models_dir.is_absolute() else (base / models_dir).resolve())
    return built(lambda: TrainingParams.from_mapping(values))


def _schedule(raw: Any) -> Schedule | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"every_s", "daily_at"}:
        raise ConfigError("trainer.schedule", raw, "null, {every_s: N} or {daily_at: 'HH:MM'} (UTC)")
    return built(lambda: Schedule(every_s=raw.get("every_s"), daily_at=raw.get("daily_at")))


def _quality(s: Section) -> QualityConfig:
    cfg = QualityConfig(threshold=s.number("threshold", 0.6, lo=0, hi=1),
                        hysteresis=s.number("hysteresis", 0.05, lo=0, hi=0.5),
                        min_samples=s.integer("min_samples", 30, lo=1),
                        window=s.integer("window", 200, lo=1, hi=100_000),
                        max_calibration_gap=s.number("max_calibration_gap", 0.1, lo=0, hi=1))
    s.reject_unknown()
    return cfg


def _online(raw: Any) -> OnlineParams:
    if not isinstance(raw, Mapping):
        raise ConfigError("trainer.online", raw, "a mapping of online challenger parameters")
    return built(lambda: OnlineParams.from_mapping(raw), prefix="trainer.online.")
