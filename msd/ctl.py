"""`msd-ctl`: talk to a running msd over its control socket.

Exit codes: 0 success, 1 the daemon answered with an error, 2 bad arguments, 3 the daemon is
not running (no socket, or nobody answering on it). The model commands (versions, compare,
rollback: msd.ctl_models) read PostgreSQL instead and exit 1 when it cannot be reached.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from msd import ctl_models, ctl_modes
from msd.errors import ProtocolError
from msd.supervisor import protocol

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING = 1, 2, 3
DEFAULT_CONFIG = "etc/model-service.yaml"


class NotRunning(Exception):
    pass


def _add_global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    """-s/-c/--json/--timeout; accepted before the subcommand and after it (`status --json`)."""
    def add(*names: str, **kwargs) -> None:
        if in_subcommand:
            if any(name in parser._option_string_actions for name in names):
                return      # the subcommand defines it itself (e.g. versions --json)
            kwargs["default"] = argparse.SUPPRESS     # so it cannot undo a value given before the subcommand
        parser.add_argument(*names, **kwargs)

    add("-s", "--socket", help="control socket path (default: from the config file)")
    add("-c", "--config", help=f"config file naming control.socket and, for versions/compare/rollback, "
                               f"database.dsn (default: {DEFAULT_CONFIG})")
    add("--json", action="store_true", help="print the raw JSON reply")
    add("--timeout", type=float, help="seconds to wait for the daemon (default: 15)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msd-ctl", description="control a running msd")
    _add_global_options(parser, in_subcommand=False)
    parser.set_defaults(socket=None, config=None, json=False, timeout=15.0)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="roles, trainer, config and health")
    sub.add_parser("reload", help="re-read the config file (same as SIGHUP)")
    retrain = sub.add_parser("retrain", help="start a training run (cancels a running one)")
    retrain.add_argument("--strategy")
    sub.add_parser("stop", help="stop the daemon gracefully")
    sub.add_parser("step-down", help="hand the leadership over to a standby (rolling upgrades)")
    ctl_models.add_parsers(sub)
    ctl_modes.add_parsers(sub)
    for command in sub.choices.values():
        _add_global_options(command, in_subcommand=True)
    return parser


def socket_path(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    if os.environ.get("MSD_CONTROL_SOCKET") and not args.config:
        return Path(os.environ["MSD_CONTROL_SOCKET"])
    from msd.config import load_config
    return load_config(args.config or DEFAULT_CONFIG).control.socket


def call(path: Path, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunning(f"msd is not running (no answer on {path}: {exc.strerror})") from None
        protocol.write_frame(sock, request)
        return protocol.read_frame(sock)
    finally:
        sock.close()


def ask_daemon(args: argparse.Namespace, request: dict[str, Any]) -> tuple[str, Any]:
    """("ok", reply), ("not_running", why) or ("unreachable" | "error", why)."""
    try:
        return "ok", call(socket_path(args), request, args.timeout)
    except NotRunning as exc:
        return "not_running", str(exc)
    except (ProtocolError, OSError) as exc:
        # A timeout or a dropped connection: something holds the socket but does not answer.
        hung = isinstance(exc, (socket.timeout, ConnectionError))
        return ("unreachable" if hung else "error"), str(exc) or type(exc).__name__


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def render_status(result: dict[str, Any]) -> str:
    d = result["daemon"]
    loaded = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["config_loaded_at"]))
    lines = [f"msd pid {d['pid']}  {d['state']}  up {_age(d['uptime_s'])}  "
             f"{'healthy' if d['healthy'] else 'DEGRADED'}",
             f"config {d['config_file']} (loaded {loaded})"]
    if d["config_error"]:
        lines.append(f"CONFIG ERROR (running config kept): {d['config_error']['message']}")
    lines += _leadership_lines(result.get("leadership"))
    lines.append(f"{'ROLE':<10} {'STATE':<9} {'PID':>7} {'UPTIME':>9} {'RESTARTS':>8} {'HEARTBEAT':>9}  DETAIL")
    for name, r in result["roles"].items():
        detail = "; ".join(f"{k}={v}" for k, v in sorted(r["status"].items())
                           if k not in ("degraded", "strategies", "assets", "learning", "dependencies",
                                        "market_updates_by_asset", "coalesced_by_asset"))
        lines.append(f"{name:<10} {r['state']:<9} {r['pid'] or '-':>7} {_age(r['uptime_s']):>9} "
                     f"{r['restarts']:>8} {_age(r['heartbeat_age_s']):>9}  {_dependencies(r['status'])}{detail}")
    lines += _strategy_lines(result["roles"].get("signaller", {}).get("status", {}))
    if result.get("memory_rss_bytes"):
        lines.append(_memory_line(result["memory_rss_bytes"]))
    for problem in d["problems"]:
        lines.append(f"problem: {problem}")
    t = result["trainer"]
    running = t["running"]
    lines.append("trainer: " + (f"request {running['id']} running {_age(running['running_s'])} "
                                f"({running['reason']})" if running else "idle"))
    for run in t["recent"][:5]:
        lines.append(f"  request {run['request_id']}: {run['outcome']} ({run['reason']})")
    return "\n".join(lines)


def _memory_line(memory: dict[str, int | None]) -> str:
    """`memory (RSS): supervisor 41.2 MB, consumer ...; total 190.0 MB; trainer idle`."""
    def mb(value: int | None) -> str:
        return "-" if value is None else f"{value / 1e6:.1f} MB"
    roles = ", ".join(f"{name} {mb(value)}" for name, value in memory.items()
                      if name not in ("total_without_trainer", "trainer"))
    trainer = "idle" if memory.get("trainer") is None else mb(memory["trainer"])
    return f"memory (RSS): {roles}; total {mb(memory.get('total_without_trainer'))}; trainer {trainer}"


def _leadership_lines(lead: dict[str, Any] | None) -> list[str]:
    """`leader (epoch 4) since ...; lease held by host-a/123 ...` when leadership is on."""
    if not lead or not lead.get("enabled"):
        return []
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lead["since"])) if lead.get("since") else "-"
    role = (lead.get("role") or "unknown").upper()
    line = f"leadership: this instance ({lead['holder_name']}) is {role}"
    line += f" (epoch {lead['epoch']})" if lead.get("epoch") is not None else ""
    line += f" since {since}" + (f": {lead['reason']}" if lead.get("reason") else "")
    lease = lead.get("lease") or {}
    holder = (f"lease held by {lease['holder']} (epoch {lease['epoch']}) since {lease['since']}, "
              f"expires {lease['expires_at']}" if lease.get("holder") else "lease free (no leader)")
    lines = [line, f"leadership: {holder}"]
    if lead.get("note"):
        lines.append(f"leadership: {lead['note']}")
    return lines


def _dependencies(status: dict[str, Any]) -> str:
    """`database up, broker DOWN, ws-gateway up; ` from a role's DependencyHealth view."""
    deps = status.get("dependencies") or {}
    if not deps:
        return ""
    return ", ".join(f"{name} {'up' if state.get('up') else 'DOWN'}" for name, state in sorted(deps.items())) + "; "


def _strategy_lines(signaller: dict[str, Any]) -> list[str]:
    strategies = signaller.get("strategies") or {}
    if not strategies:
        return []
    lines = [f"{'STRATEGY':<20} {'MODE':<7} {'SENT':>6} {'THROTTLED':>9} {'SUPPRESSED':>10}  LAST SIGNAL / DROPPED"]
    for sid, s in sorted(strategies.items()):
        dropped = ", ".join(f"{reason} {n}" for reason, n in sorted(s["dropped"].items()))
        last = s["last_signal_at"] or "never"
        lines.append(f"{sid:<20} {s['mode']:<7} {s['sent']:>6} {s['throttled']:>9} {s['suppressed']:>10}  "
                     f"{last}{'; ' + dropped if dropped else ''}{'; DEGRADED: ' + s['degraded'] if s['degraded'] else ''}"
                     f"{'; PAUSED ' + s['paused'] if s.get('paused') else ''}")
    assets = signaller.get("assets") or {}
    if assets:
        lines.append("market: " + ", ".join(f"{a} {v}" for a, v in sorted(assets.items())))
    learning = signaller.get("learning") or {}
    for sid, last in sorted((learning.get("last_training") or {}).items()):
        lines.append(f"training {sid}: last {last['outcome']} at {last['at']} ({last['reason']}); "
                     f"{(learning.get('labelled_since_training') or {}).get(sid, 0)} labelled since")
    for sid, size in sorted((learning.get("datasets") or {}).items()):
        lines.append(f"dataset {sid}: " + ", ".join(f"{k} {v}" for k, v in size.items()))
    for sid, spend in sorted((learning.get("warmup") or {}).items()):
        lines.append(f"warm-up {sid}: spent {spend['spend_usdt']:.2f} of {spend['budget_usdt']:g} USDT over "
                     f"{spend['calls']} labelled calls, {spend['elapsed_s'] / 3600:.1f} h of "
                     f"{spend['max_duration_s'] / 3600:g} h (budget since {spend['started_at']}); "
                     f"{spend.get('unlabelled_calls', 0)} calls without a label charged the worst case, "
                     f"{spend.get('unfilled_calls', 0)} never filled"
                     f"{'; LABELS STOPPED' if spend.get('labels_stalled') else ''}"
                     f"{'; PAUSED' if spend.get('mode') == 'paused' else ''}")
    for sid, live in sorted((learning.get("live_quality") or {}).items()):
        accuracy = "-" if live["accuracy"] is None else f"{live['accuracy']:.3f}"
        confidence = "-" if live.get("mean_confidence") is None else f"{live['mean_confidence']:.3f}"
        lines.append(f"live {sid} v{live['version']}: {accuracy} of {live['samples']} calls paid after costs"
                     f"{' DEGRADED' if live['degraded'] else ''}; mean confidence {confidence} "
                     f"({live.get('calibration', '-')})")
    for sid, online in sorted((learning.get("online") or {}).items()):
        lines.append(f"online {sid}: challenger from v{online['from_version']}, {online['learned']} outcomes "
                     f"learned, {online['scored']} decisions replayed, {online['phase']} (block "
                     f"{online['block']}, {online['looks']} gate looks); last gate: "
                     f"{online['last_verdict'] or 'not yet'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.socket and args.config:
            parser.error("argument -c/--config: not allowed with argument -s/--socket")
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else 0
    if args.command in ctl_models.COMMANDS:
        return ctl_models.run(args, lambda request: ask_daemon(args, request), DEFAULT_CONFIG)
    if args.command in ctl_modes.COMMANDS:
        return ctl_modes.run(args, lambda request: ask_daemon(args, request), DEFAULT_CONFIG)
    args_for_request = {"strategy": args.strategy} if args.command == "retrain" and args.strategy else {}
    try:
        kind, reply = ask_daemon(args, protocol.request(args.command, **args_for_request))
    except Exception as exc:   # e.g. the config file named by -c is invalid
        print(f"msd-ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if kind != "ok":
        print(f"msd-ctl: {reply}", file=sys.stderr)
        return EXIT_ERROR if kind == "error" else EXIT_NOT_RUNNING
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
    elif reply.get("ok") and args.command == "status":
        print(render_status(reply["result"]))
    elif reply.get("ok"):
        print(json.dumps(reply["result"], sort_keys=True))
    else:
        print(f"msd-ctl: {reply.get('error')}", file=sys.stderr)
    return 0 if reply.get("ok") else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
