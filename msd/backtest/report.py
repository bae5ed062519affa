"""The files under --out: report.json (byte-identical for the same inputs), report.md,
trades.csv (every fill with its decision) and equity.png (needs the optional extra '.[report]')."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

from msd.backtest.summary import money

PNG_MISSING = ("equity.png not written: matplotlib is not installed; install the optional extra with "
               "`pip install -e '.[report]'`")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_commit(root: Path) -> str | None:
    """The checkout's commit, read from .git without running git (a worktree's .git is a file)."""
    git = root / ".git"
    try:
        if git.is_file():
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(" ", 1)[1]
        common = git / "commondir"
        base = (git / common.read_text().strip()).resolve() if common.exists() else git
        for where in (git, base):
            if (where / ref).exists():
                return (where / ref).read_text().strip()
        for line in (base / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0]
    except (OSError, IndexError):
        return None
    return None


def write_json(report: dict[str, Any], out: Path) -> Path:
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return path


TRADE_COLUMNS = ("time", "asset", "strategy", "role", "side", "quantity", "price", "fee", "spread_cost", "order_type",
                 "signal_id", "mode", "model_version", "confidence", "decided_at", "decision_price", "exit_reason",
                 "outcome", "move", "cost", "snapshot")


def write_trades(replay, out: Path) -> Path:
    outcomes = {row.decision.signal_id: row for slot in replay.slots for row in slot.learning.labelled}
    path = out / "trades.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(TRADE_COLUMNS)
        for fill in replay.account.fills:
            decision = replay.decisions.get(fill.signal_id, {})
            row = outcomes.get(fill.signal_id)
            outcome = "" if row is None else ("paid" if row.paid else "did not pay")
            writer.writerow([fill.at.isoformat(), fill.asset, fill.strategy, fill.role, fill.side, fill.quantity,
                             fill.price, fill.fee, fill.spread_cost, fill.order_type, fill.signal_id,
                             decision.get("mode", ""), decision.get("model_version") or "",
                             decision.get("confidence", ""),
                             decision["decided_at"].isoformat() if "decided_at" in decision else "",
                             decision.get("trigger", ""), decision.get("reason") or "", outcome,
                             "" if row is None else repr(row.move), "" if row is None else repr(row.cost),
                             json.dumps(decision.get("snapshot"), sort_keys=True) if decision.get("snapshot") else ""])
    return path


def write_png(replay, report: dict[str, Any], out: Path) -> str | None:
    """equity.png: account equity and drawdown, per-strategy PnL, promotions and pauses marked.
    Returns why it was not written, or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return PNG_MISSING
    times = [at for at, _, _ in replay.equity]
    equity = [float(e) for _, e, _ in replay.equity]
    peak, drawdown = float("-inf"), []
    for value in equity:
        peak = max(peak, value)
        drawdown.append((value - peak) / peak * 100 if peak > 0 else 0.0)
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    top.plot(times, equity, color="black", linewidth=1)
    top.set_ylabel("account equity")
    middle.fill_between(times, drawdown, 0, color="tab:red", alpha=0.4)
    middle.set_ylabel("drawdown %")
    for slot in replay.slots:
        sid = slot.params.id
        bottom.plot(times, [float(p.get(sid, 0)) for _, _, p in replay.equity], linewidth=1, label=sid)
        for version in slot.learning.versions:
            if version.active_from is not None:
                bottom.axvline(version.active_from, color="tab:green", linewidth=0.8, linestyle="--")
        for at, text in slot.learning.timeline:
            if text == "paused":
                bottom.axvline(at, color="tab:orange", linewidth=0.8, linestyle=":")
    bottom.set_ylabel("strategy PnL")
    bottom.legend(fontsize=7, loc="best")
    bottom.set_xlabel("UTC (green dashes: a version starts serving; orange dots: a strategy pauses)")
    fig.tight_layout()
    fig.savefig(out / "equity.png", dpi=100)
    plt.close(fig)
    return None


def write_markdown(report: dict[str, Any], out: Path) -> Path:
    lines = ["# msd backtest", ""]
    manifest = report["manifest"]
    lines += [f"- {line}" for line in manifest["assumptions"]]
    lines += ["", f"Code {manifest['code_commit']}, config sha256 {manifest['config_sha256'][:16]}…, "
              f"seed {manifest['seed']}.", "", "## Account", ""]
    lines += _table(["figure", "value"], report["account"].items())
    lines += ["", "## Strategies", ""] + _table(
        ["strategy", "decisions", "closed trades", "hit rate", "pay rate (warm-up)", "net PnL", "fees", "spread",
         "Sharpe (n days)", "max drawdown", "gate passes/attempts", "mode at end"],
        [[sid, s["decisions"], s["closed_trades"], _pct(s["hit_rate"]), _pct(s["warmup"]["pay_rate"]), s["net_pnl"],
          s["fees"], s["spread_cost"], f"{_num(s['sharpe_daily'])} ({s['daily_returns_n']})", _num(s["max_drawdown"]),
          f"{s['gate_passes']}/{s['gate_attempts']}", s["mode_timeline"][-1][1] if s["mode_timeline"] else "-"]
         for sid, s in report["strategies"].items()])
    lines += ["", "## Model versions", ""] + _table(
        ["strategy", "version", "trained", "serving from", "recorded precision", "out-of-sample calls",
         "pay rate [95 % CI]", "net return per call [95 % CI]"],
        [_version_row(sid, v) for sid, s in report["strategies"].items() for v in s["versions"]])
    lines += ["", "## Assets", ""] + _table(
        ["asset", "candles", "gaps", "zero volume", "net PnL", "Sharpe (n days)", "max drawdown", "buy and hold"],
        [[asset, a["candles"], a["gaps"], a["zero_volume"], a["net_pnl"],
          f"{_num(a['sharpe_daily'])} ({a['daily_returns_n']})", _num(a["max_drawdown"]),
          _pct(a["buy_and_hold_return"])] for asset, a in report["assets"].items()])
    lines += [f"- {asset} spread from the candles (Corwin-Schultz, --spread-bps the floor): median "
              f"{_num(sp['median_bps'])} bps, mean {_num(sp['mean_bps'])} bps, above the floor after "
              f"{_pct(sp['above_floor'])} of {sp['closes']} closes"
              for asset, a in report["assets"].items() if (sp := a.get("spread_from_candles")) and sp["closes"]]
    lines += ["", "## Exits by reason", ""] + [f"- {k}: {v}" for k, v in report["exits_by_reason"].items()]
    lines += ["", "## Days", ""] + _table(
        ["day", "equity", "PnL", "closed trades", "hit rate"],
        [[d["day"], _num(d["equity"]), _num(d["pnl"]), d["closed_trades"], _pct(d["hit_rate"])] for d in report["days"]])
    lines += _controls(report.get("controls"))
    lines += ["", f"Open at the end (valued at the last close): {len(report['open_trades'])} lots.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _table(headers: list[str], rows) -> list[str]:
    """A markdown table; every row must have a cell per header."""
    lines = ["| " + " | ".join(headers) + " |", "|---" * len(headers) + "|"]
    for row in rows:
        cells = [str(cell) for cell in row]
        if len(cells) != len(headers):
            raise ValueError(f"table row {cells} has {len(cells)} cells for {len(headers)} columns")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _version_row(sid: str, v: dict[str, Any]) -> list[str]:
    oos = v["out_of_sample"]
    ci, net = oos["pay_rate_ci95"], oos["net_return_ci95"]
    return [sid, f"v{v['version']}", v["trained_at"], v["active_from"] or "not promoted",
            _num(v["recorded_validation"].get("precision")), oos["calls"],
            f"{_pct(oos['pay_rate'])} {'' if ci is None else f'[{_pct(ci[0])}, {_pct(ci[1])}]'}",
            f"{_num(oos['net_return_per_call'])} {'' if net is None else f'[{_num(net[0])}, {_num(net[1])}]'}"]


def _controls(controls: dict[str, Any] | None) -> list[str]:
    if not controls:
        return []
    shuffled = controls["shuffled_labels"]
    return (["", "## Cost sensitivity (fees and spread scaled)", "",
             "order-manager picks Market orders below a 0.1 % spread (CONTRACTS 1.2), so scaling the spread "
             "also changes which orders are makers and which are takers.", ""]
            + _table(["factor", "net PnL", "fees", "spread"],
                     [[f"x{r['factor']}", r["net_pnl"], r["fees"], r["spread_cost"]] for r in controls["cost_sensitivity"]])
            + ["", f"Shuffled-outcome control: {shuffled['trainings']} trainings, {shuffled['promotions']} "
                   f"promotions: {shuffled['verdict']}."])


def _pct(value) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


__all__ = ["money", "write_json", "write_markdown", "write_png", "write_trades", "sha256_file", "code_commit"]
