"""`msd-ctl pause | resume`: stop a strategy's new entries at once, or start it again.

Like the model commands these write PostgreSQL (the database named by `-c`) in one audited
transaction, then ask a running daemon to re-read its models and pauses so the signaller acts
at once; a daemon that is down applies the change when it starts. Exits are never paused: the
exit role keeps protecting open positions. `resume` also starts a new warm-up budget.
"""
from __future__ import annotations

import argparse
from typing import Any

from msd import ctl_models
from msd.ctl_models import EXIT_OK, Ask, CtlFailure, database_location

COMMANDS = ("pause", "resume")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    pause = sub.add_parser("pause", help="stop new entries of a strategy (or all) at once")
    which = pause.add_mutually_exclusive_group(required=True)
    which.add_argument("--strategy")
    which.add_argument("--all", action="store_true", help="every configured strategy")
    pause.add_argument("--reason", help="why (recorded in the audit trail)")
    resume = sub.add_parser("resume", help="let a paused strategy trade again, with a new warm-up budget")
    resume.add_argument("--strategy", required=True)
    resume.add_argument("--reason", help="why (recorded in the audit trail)")


def run(args: argparse.Namespace, ask: Ask, default_config: str) -> int:
    return ctl_models.run(args, ask, default_config, dispatch=_dispatch)


def _dispatch(args: argparse.Namespace, cfg, db, ask: Ask) -> int:
    from msd.errors import DatabaseUnavailable
    try:
        done = _pause(args, cfg, db) if args.command == "pause" else _resume(args, db)
    except DatabaseUnavailable as exc:
        raise CtlFailure(f"cannot reach PostgreSQL at {database_location(cfg.database.dsn)}: {exc}") from None
    return _tell_daemon(ask, done)


def _pause(args: argparse.Namespace, cfg, db) -> str:
    from msd.store.pauses import pause
    from msd.values.clock import utc_now
    strategies = sorted(p.id for p in cfg.signaller.strategies) if args.all else [args.strategy]
    reason = f"paused by operator (msd-ctl{': ' + args.reason if args.reason else ''})"
    now = utc_now()         # an operator acts in wall time: msd-ctl's clock is the wall's
    with db.transaction() as conn:
        written = [sid for sid in strategies if pause(conn, sid, "operator", reason, now=now)]
    already = sorted(set(strategies) - set(written))
    print(f"paused: {', '.join(written) or 'none'}" + (f"; already paused: {', '.join(already)}" if already else ""))
    return f"pause of {', '.join(strategies)}"


def _resume(args: argparse.Namespace, db) -> str:
    from msd.store.pauses import resume
    from msd.store.versions import get_active
    from msd.values.clock import utc_now
    reason = f"resumed by operator with a new warm-up budget (msd-ctl{': ' + args.reason if args.reason else ''})"
    with db.transaction() as conn:
        active = get_active(conn, args.strategy)
        was_paused = resume(conn, args.strategy, "model" if active else "warmup", reason,
                            active.version if active else None, now=utc_now())
    mode = f"model v{active.version}" if active else "warm-up"
    print(f"{args.strategy}: {'resumed' if was_paused else 'was not paused'}; {mode} with a new "
          "warm-up budget from now")
    return f"resume of {args.strategy}"


def _tell_daemon(ask: Ask, what: str) -> int:
    from msd.supervisor import protocol
    kind, payload = ask(protocol.request("models_changed", reason=what))
    if kind == "not_running":
        print("msd is not running; the database change is done and applies when it starts")
        return EXIT_OK
    if kind == "ok" and payload.get("ok"):
        told = payload["result"].get("notified")
        print("msd notified: the signaller applies it now" if told
              else "msd is running but its signaller is not; it applies it when it starts")
        return EXIT_OK
    why: Any = payload.get("error") if kind == "ok" else payload
    raise CtlFailure(f"the database change is done, but msd could not be told: {why}; it applies "
                     "within trainer.check_interval_s anyway")
