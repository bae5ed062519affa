"""`msd backtest` end to end on the shipped real candles (one simulated day): the files, a
report.json byte-identical for the same inputs, PnL that adds up, and msd's schema and models
directory left exactly as they were."""
import json

import psycopg2
import pytest
import yaml

from msd.cli import main
from msd.store.migrate import apply_migrations
from tests.backtest_helpers import REAL_CANDLES, strategy

pytestmark = pytest.mark.skipif(REAL_CANDLES is None, reason="shared/data is not beside the checkout")


def row_counts(dsn: str) -> dict[str, int]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'msd'")
        counts = {}
        for (table,) in cur.fetchall():
            cur.execute(f'SELECT count(*) FROM msd."{table}"')
            counts[table] = cur.fetchone()[0]
    return counts


def test_backtest_writes_its_files_only_and_the_same_report_twice(tmp_path, fresh_pg_dsn):
    apply_migrations(fresh_pg_dsn)
    models = tmp_path / "models"
    models.mkdir()
    (models / "keep.txt").write_text("untouched")
    config = tmp_path / "msd.yaml"
    config.write_text(yaml.safe_dump({
        "database": {"dsn": fresh_pg_dsn},
        "signaller": {"strategies": [strategy("momentum_alt", "ALTBTC", "momentum", 0.2, seed=3),
                                     strategy("explorer_alt", "ALTBTC", seed=4)]},
        "exits": {"rules": {"stop_loss_pct": 2, "trailing": {"activation_pct": 1.5, "distance_pct": 0.8}}},
        "trainer": {"data_threshold": 300, "training": {"models_dir": str(models), "min_new_rows": 200}}}))
    before = row_counts(fresh_pg_dsn)
    args = ["backtest", "-c", str(config), "--candles", str(REAL_CANDLES), "--asset", "ALTBTC",
            "--timerange", "20171106-20171107", "--seed", "7", "--no-controls"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    first, second = (tmp_path / "a" / "report.json").read_bytes(), (tmp_path / "b" / "report.json").read_bytes()
    assert first == second
    assert row_counts(fresh_pg_dsn) == before
    assert sorted(p.name for p in models.iterdir()) == ["keep.txt"]
    report = json.loads(first)
    account = report["account"]
    assert account["fills"] > 100 and account["strategy_pnl_sum"] == account["net_pnl"]
    assert set(report["strategies"]) == {"momentum_alt", "explorer_alt"}
    assert sum(s["decisions"] for s in report["strategies"].values()) >= 50
    assert report["manifest"]["data"][0]["sha256"] and report["counts"]["candles"] > 1000
    lines = (tmp_path / "a" / "trades.csv").read_text().splitlines()
    assert lines[0].startswith("time,asset,strategy,role") and len(lines) == account["fills"] + 1
    assert (tmp_path / "a" / "report.md").read_text().startswith("# msd backtest")


def test_compare_prints_two_runs_side_by_side(tmp_path, capsys):
    for name, pnl in (("a", "1.00"), ("b", "-2.00")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(
            {"account": {"net_pnl": pnl}, "strategies": {"s": {"net_pnl": pnl, "decisions": 3}}}))
    assert main(["backtest", "compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "account net_pnl" in out and "1.00" in out and "-2.00" in out and "s decisions" in out


def test_from_db_replays_the_recorded_bars_like_the_same_candles_from_a_file(tmp_path, fresh_pg_dsn):
    """`--from-db --assets`: msd.market_bars, read only, gives the report the file gives."""
    from datetime import datetime, timezone
    from decimal import Decimal

    from msd.store.db import Database
    from msd.store.market import upsert_bars
    from msd.values.messages import Kline
    from tests.backtest_helpers import random_walk, write_candles
    apply_migrations(fresh_pg_dsn)
    rows = random_walk(400, 3, step=0.003)
    db = Database(fresh_pg_dsn)
    try:
        with db.transaction() as conn:
            upsert_bars(conn, [Kline("BTCUSDT", datetime.fromtimestamp(r[0] / 1000, timezone.utc),
                                     *(Decimal(repr(v)) for v in r[1:6]), Decimal(0), True,
                                     datetime.fromtimestamp(r[0] / 1000 + 60, timezone.utc)) for r in rows])
    finally:
        db.close()
    config = tmp_path / "msd.yaml"
    config.write_text(yaml.safe_dump({"database": {"dsn": fresh_pg_dsn},
                                      "signaller": {"strategies": [strategy("explorer", "BTCUSDT", seed=2)]},
                                      "trainer": {"training": {"models_dir": str(tmp_path / "models")}}}))
    before = row_counts(fresh_pg_dsn)
    common = ["backtest", "-c", str(config), "--seed", "1", "--no-controls"]
    assert main(common + ["--from-db", "--assets", "BTCUSDT", "--out", str(tmp_path / "db")]) == 0
    assert main(common + ["--candles", str(write_candles(tmp_path, rows)), "--asset", "BTCUSDT",
                          "--out", str(tmp_path / "file")]) == 0
    assert row_counts(fresh_pg_dsn) == before
    from_db, from_file = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("db", "file"))
    assert from_db["manifest"]["data"][0]["file"] == "msd.market_bars BTCUSDT"
    for report in (from_db, from_file):
        del report["manifest"], report["assets"]["BTCUSDT"]["file"]
    assert from_db["account"]["fills"] > 10 and from_db == from_file
