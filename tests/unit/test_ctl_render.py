"""msd-ctl's human table, from a status reply as the daemon sends it."""
from msd.ctl import render_status

STATUS = {
    "daemon": {"pid": 7, "uptime_s": 3.2, "state": "ready", "config_file": "/etc/msd.yaml",
               "config_loaded_at": 1_700_000_000.0, "config_error": None, "healthy": False,
               "problems": ["signaller: strategy capped degraded: exposure unknown"]},
    "roles": {"consumer": {"state": "RUNNING", "pid": 8, "uptime_s": 3.0, "restarts": 1, "heartbeat_age_s": 0.1,
                           "last_exit": None, "status": {"consumed": 5, "degraded": {}}},
              "signaller": {"state": "RUNNING", "pid": 9, "uptime_s": 3.0, "restarts": 0, "heartbeat_age_s": 0.2,
                            "last_exit": None, "status": {
                                "assets": {"BTCUSDT": "95000 (0.1s)", "XRPUSDT": "stale"},
                                "strategies": {"capped": {"mode": "warmup", "sent": 3, "throttled": 2, "suppressed": 1,
                                                          "dropped": {"exposure_limit": 4, "throttled_strategy": 2},
                                                          "last_signal_at": "2026-11-24T01:00:00+00:00",
                                                          "degraded": "exposure unknown"}}}}},
    "trainer": {"running": None, "pending": None, "recent": [{"request_id": 1, "outcome": "cancelled",
                                                              "reason": "manual"}]},
}


def test_table_shows_roles_strategies_market_problems_and_trainer():
    text = render_status(STATUS)
    assert "DEGRADED" in text.splitlines()[0]
    assert "consumer   RUNNING" in text and "consumed=5" in text
    line = next(l for l in text.splitlines() if l.startswith("capped"))
    assert "warmup" in line and "exposure_limit 4" in line and "DEGRADED: exposure unknown" in line
    assert "market: BTCUSDT 95000 (0.1s), XRPUSDT stale" in text
    assert "problem: signaller: strategy capped degraded" in text
    assert "request 1: cancelled (manual)" in text


def test_memory_line_shows_every_process_the_total_and_the_trainer_apart():
    memory = {"supervisor": 41_000_000, "consumer": 52_300_000, "signaller": 61_000_000, "exits": None,
              "total_without_trainer": 154_300_000, "trainer": None}
    text = render_status({**STATUS, "memory_rss_bytes": memory})
    line = next(l for l in text.splitlines() if l.startswith("memory (RSS)"))
    assert "supervisor 41.0 MB" in line and "consumer 52.3 MB" in line and "signaller 61.0 MB" in line
    assert "exits -" in line and "total 154.3 MB" in line and line.endswith("trainer idle")
    busy = render_status({**STATUS, "memory_rss_bytes": {**memory, "trainer": 120_000_000}})
    assert "trainer 120.0 MB" in busy


def test_leadership_lines_say_this_instances_role_the_holder_and_since_when():
    lease = {"epoch": 4, "holder": "box-a/11", "host": "box-a", "pid": 11, "config_hash": "ab",
             "since": "2026-12-01T10:00:00+00:00", "renewed_at": "2026-12-01T10:05:00+00:00",
             "expires_at": "2026-12-01T10:05:10+00:00"}
    standby = {**STATUS, "leadership": {"enabled": True, "role": "standby", "epoch": None, "since": 1_700_000_000.0,
                                        "reason": "competing for the lease", "transitions": 1,
                                        "holder_name": "box-b/22", "lease": lease,
                                        "note": "this instance's code is newer than the database schema"}}
    text = render_status(standby)
    assert "this instance (box-b/22) is STANDBY since" in text
    assert "lease held by box-a/11 (epoch 4) since 2026-12-01T10:00:00+00:00" in text
    assert "code is newer than the database schema" in text
    assert "leadership" not in render_status({**STATUS, "leadership": {"enabled": False}})
