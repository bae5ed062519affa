"""`msd-ctl versions | compare | rollback`: model versions, read and switched in PostgreSQL.

These commands talk to the database named by the config file (`-c`), not to the daemon: they
work whether msd runs or not. A rollback verifies the target's artifact against its recorded
sha256 and loads it as the signaller will (a tampered, missing or unusable artifact is refused
and nothing changes), switches the active
version in one audited transaction, then asks a running daemon to reload its active versions
so the signaller switches at once. The store and config modules are imported inside the
commands so that `msd-ctl status` never loads numpy or psycopg2.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
COMMANDS = ("versions", "compare", "rollback")
# (column title, quality metric name, width) of the human versions table.
METRIC_COLUMNS = (("ACC", "accuracy", 6), ("BAL_ACC", "balanced_accuracy", 7),
                  ("LOGLOSS", "log_loss", 7), ("BRIER", "brier", 6),
                  ("MAJ_ACC", "majority.accuracy", 7), ("NAIVE_ACC", "naive.accuracy", 9))
_VERSION = re.compile(r"^[vV]?(\d+)$")

# ask(request) -> (kind, payload): kind "ok" with the daemon's reply, "not_running", or
# "error" with the reason (see msd.ctl.ask_daemon).
Ask = Callable[[dict[str, Any]], tuple[str, Any]]


class CtlFailure(Exception):
    """The command failed; the message is for the operator and `code` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        self.code = code
        super().__init__(message)


def version_number(text: str) -> int:
    """`v3`, `V3` or `3` -> 3 (argparse type)."""
    match = _VERSION.match(text.strip())
    if not match or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"version {text!r} is invalid; expected vN or N with N >= 1")
    return int(match.group(1))


def add_parsers(sub: argparse._SubParsersAction) -> None:
    json_flag = {"action": "store_true", "default": argparse.SUPPRESS, "help": "print JSON"}
    versions = sub.add_parser("versions", help="model versions with metrics (reads PostgreSQL)")
    versions.add_argument("--strategy", help="only this strategy (default: every known strategy)")
    versions.add_argument("--json", **json_flag)
    compare = sub.add_parser("compare", help="two versions rescored on one window, side by side")
    compare.add_argument("--strategy", required=True)
    compare.add_argument("--on", type=version_number, dest="on",
                         help="whose validation window both are scored on (default: the newer "
                              "version's; a window either version learned from is refused)")
    compare.add_argument("a", type=version_number, help="version, e.g. v3 or 3")
    compare.add_argument("b", type=version_number, help="version, e.g. v120 or 120")
    compare.add_argument("--json", **json_flag)
    rollback = sub.add_parser("rollback", help="make an earlier version active again")
    rollback.add_argument("--strategy", required=True)
    rollback.add_argument("--to", required=True, type=version_number, dest="to",
                          help="target version, e.g. v3")
    rollback.add_argument("--reason", help="why (recorded in the audit trail)")


def run(args: argparse.Namespace, ask: Ask, default_config: str, dispatch: Callable | None = None) -> int:
    """Run a command that reads the database (models here, modes in msd.ctl_modes); prints the
    result or `msd-ctl: <why>` and returns the exit code."""
    try:
        cfg, db = _open(args, default_config)
        try:
            return (dispatch or _dispatch)(args, cfg, db, ask)
        finally:
            db.close()
    except CtlFailure as exc:
        print(f"msd-ctl: {exc}", file=sys.stderr)
        return exc.code


def _dispatch(args: argparse.Namespace, cfg, db, ask: Ask) -> int:
    from msd.errors import DatabaseUnavailable, MsdError
    try:
        if args.command == "versions":
            return _versions(args, cfg, db)
        if args.command == "compare":
            return _compare(args, cfg, db)
        return _rollback(args, db, ask, cfg.trainer.training)
    except CtlFailure:
        raise
    except DatabaseUnavailable as exc:
        raise CtlFailure(f"cannot reach PostgreSQL at {database_location(cfg.database.dsn)} "
                         f"(database.dsn in {cfg.source}): {exc}") from None
    except MsdError as exc:
        raise CtlFailure(str(exc)) from None
    except Exception as exc:   # e.g. the schema is missing: the driver's own error type
        from msd.store.db import describe
        raise CtlFailure(f"{args.command} failed on PostgreSQL at "
                         f"{database_location(cfg.database.dsn)}: {describe(exc)}") from None


def _open(args: argparse.Namespace, default_config: str):
    if args.socket:
        raise CtlFailure(f"{args.command} reads PostgreSQL, and -s names only the control "
                         "socket; give the config file with -c instead", EXIT_USAGE)
    from msd.config import load_config
    from msd.store.db import Database
    try:
        cfg = load_config(args.config or default_config)
    except (OSError, ValueError) as exc:
        raise CtlFailure(f"config {args.config or default_config}: {exc}", EXIT_USAGE) from None
    db = Database(cfg.database.url, connect_timeout=cfg.database.connect_timeout_s,
                  application_name="msd-ctl")
    return cfg, db


def database_location(dsn: str) -> str:
    """host:port/dbname of a DSN, never its user or password."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"


# ----- versions ----------------------------------------------------------------------------
def _versions(args: argparse.Namespace, cfg, db) -> int:
    from msd.store.datasets import strategies_with_executions
    from msd.store.modes import latest_modes
    from msd.store.versions import list_versions
    with db.transaction() as conn:
        if args.strategy:
            strategies = [args.strategy]
        else:  # every strategy that can have versions: configured, traded or ever switched
            strategies = sorted({s.id for s in cfg.signaller.strategies}
                                | set(strategies_with_executions(conn)) | set(latest_modes(conn)))
        listing = {s: list_versions(conn, s) for s in strategies}
    report = {s: [version_json(v) for v in versions] for s, versions in listing.items()}
    if getattr(args, "json", False):
        print(json.dumps({"strategies": report}, indent=2, sort_keys=True))
    else:
        print(render_versions(report))
    return EXIT_OK


def files_state(info) -> str:
    """'pruned' (retention removed them), 'present' or 'missing' (gone without a record)."""
    if info.files_pruned_at is not None:
        return "pruned"
    return "present" if Path(info.path).is_dir() else "missing"


def version_json(info) -> dict[str, Any]:
    """Every recorded field of a version, JSON-ready, plus the state of its files."""
    record = {key: value.isoformat() if isinstance(value, datetime) else value
              for key, value in asdict(info).items()}
    return {**record, "files": files_state(info)}


def _figure(value: Any, width: int) -> str:
    return f"{value:>{width}.4f}" if isinstance(value, (int, float)) else f"{'-':>{width}}"


def render_versions(report: dict[str, list[dict[str, Any]]]) -> str:
    """One block per strategy: a header line, then one row per version, oldest first."""
    if not report:
        return "no strategies: none is configured, has executions or has ever switched mode"
    lines: list[str] = []
    for strategy, versions in report.items():
        active = next((v["version"] for v in versions if v["is_active"]), None)
        lines.append(f"strategy {strategy}: {len(versions)} version(s), active "
                     f"{'v' + str(active) if active else 'none (warm-up)'}")
        if not versions:
            continue
        titles = " ".join(f"{title:>{width}}" for title, _, width in METRIC_COLUMNS)
        lines.append(f"  {'VER':<6} {'CREATED (UTC)':<16} {'ACT':<3} {'ROWS':>8} {titles} "
                     f"{'PROMOTED':<8} {'FILES':<7} GATE")
        lines += [_version_line(v) for v in versions]
    return "\n".join(lines)


def _version_line(v: dict[str, Any]) -> str:
    figures = v["quality"].get("validation", {})
    metrics = " ".join(_figure(figures.get(name), width) for _, name, width in METRIC_COLUMNS)
    created = v["created_at"][:16].replace("T", " ")
    return (f"  {'v' + str(v['version']):<6} {created:<16} {'*' if v['is_active'] else '':<3} "
            f"{v['labelled_rows']:>8} {metrics} {'yes' if v['promoted_when_trained'] else 'no':<8} "
            f"{v['files']:<7} {'; '.join(v['gate_reasons'])}")


# ----- compare -----------------------------------------------------------------------------
def _compare(args: argparse.Namespace, cfg, db) -> int:
    from msd.learning.evaluation import rescore_versions
    result = rescore_versions(db, cfg.trainer.training, args.strategy, args.a, args.b,
                              args.on or max(args.a, args.b))
    print(json.dumps(result, indent=2, sort_keys=True) if getattr(args, "json", False)
          else render_compare(result))
    return EXIT_OK


def render_compare(result: dict[str, Any]) -> str:
    """Metrics of both versions in columns, with b - a where both have the figure."""
    a, b = result["a"], result["b"]
    names = sorted(set(a["metrics"]) | set(b["metrics"]))
    label_a, label_b = (f"v{side['version']}{' *' if side['is_active'] else ''}" for side in (a, b))
    window = result["window"]
    lines = [f"strategy {result['strategy_id']}: v{a['version']} vs v{b['version']} rescored on the "
             f"same {window['decisions']} decisions, v{window['of_version']}'s validation window "
             f"{window['from']} .. {window['to']} (* = active)",
             f"  {'METRIC':<32} {label_a:>12} {label_b:>12} {'DIFFERENCE':>12}"]
    for name in names:
        diff = result["difference"].get(name)
        shown = f"{'-':>12}" if diff is None else f"{diff:>+12.4f}"
        lines.append(f"  {name:<32} {_figure(a['metrics'].get(name), 12)} "
                     f"{_figure(b['metrics'].get(name), 12)} {shown}")
    return "\n".join(lines)


# ----- rollback ----------------------------------------------------------------------------
def _rollback(args: argparse.Namespace, db, ask: Ask, expected=None) -> int:
    from msd.store.versions import get_version, rollback
    from msd.values.clock import utc_now
    strategy, number = args.strategy, args.to
    reason = f"rollback to v{number} (msd-ctl{': ' + args.reason if args.reason else ''})"
    with db.transaction() as conn:
        target = get_version(conn, strategy, number)
        if target is None:
            raise CtlFailure(f"--to: v{number} of {strategy!r} does not exist")
        if target.is_active:
            print(f"{strategy}: v{number} is already the active version; nothing changed")
            return EXIT_OK
        verify_artifact(target, expected)
        transition = rollback(conn, strategy, number, reason=reason, now=utc_now())     # the operator's (wall) time
    print(f"{strategy}: v{number} is now the active version (audit row {transition}: {reason})")
    if not target.promoted_when_trained:
        print(f"note: v{number} did not pass the promotion gate when trained: "
              f"{'; '.join(target.gate_reasons)}")
    return _tell_daemon(ask, strategy, number)


def verify_artifact(target, expected=None) -> None:
    """Load the version as the signaller will (recorded hashes, today's features, arrays of
    the model class, the configured label definition `expected`); refuse the rollback if that
    fails."""
    from msd.errors import MsdError
    from msd.learning.versions import load_model
    from msd.store.artifacts import TamperedArtifact
    refused = f"rollback to v{target.version} of {target.strategy_id!r} refused, nothing changed"
    if target.files_pruned_at is not None:
        raise CtlFailure(f"{refused}: its files were pruned at {target.files_pruned_at.isoformat()}")
    try:
        load_model(target, expected)
    except TamperedArtifact as exc:
        raise CtlFailure(f"{refused}: tampered artifact {exc.path}: sha256 is {exc.actual}, "
                         f"recorded {exc.expected}") from None
    except OSError as exc:
        raise CtlFailure(f"{refused}: cannot read {exc.filename or target.path}: "
                         f"{exc.strerror or exc}") from None
    except (MsdError, ValueError) as exc:   # other features, or arrays the model cannot use
        raise CtlFailure(f"{refused}: the signaller could not serve {target.path}: {exc}") from None


def _tell_daemon(ask: Ask, strategy: str, number: int) -> int:
    from msd.supervisor import protocol
    kind, payload = ask(protocol.request("models_changed", strategy=strategy,
                                         reason=f"rollback to v{number}"))
    if kind == "not_running":
        print(f"msd is not running; the database change is done and msd will serve v{number} "
              "when it starts")
        return EXIT_OK
    if kind == "ok" and payload.get("ok"):
        if payload["result"].get("notified"):
            print(f"msd notified: the signaller switches to v{number} now")
        else:
            print(f"msd is running but its signaller is not; it will load v{number} when it starts")
        return EXIT_OK
    why = payload.get("error") if kind == "ok" else payload
    raise CtlFailure(f"the database change is done (v{number} is active), but msd could not be "
                     f"told to switch: {why}; restart msd to apply it now")

