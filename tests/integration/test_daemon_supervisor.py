"""The real daemon as a subprocess: systemd notify, respawn, reload, trainer control, stop, msd-ctl."""
import json
import os
import signal

import psycopg2
import pytest
import yaml

from tests.fixtures.rabbit import amqp_url
from tests.integration.daemon import Daemon, base_config, wait_for

pytestmark = pytest.mark.integration
ROLES = ("consumer", "signaller", "exits")


@pytest.fixture(scope="module")
def daemon(resources, tmp_path_factory):
    dsn, vhost = resources
    tmp = tmp_path_factory.mktemp("daemon")
    d = Daemon(tmp, base_config(tmp, dsn, amqp_url(vhost), trainer={"job": "tests.jobs:slow_summary"}))
    d.start()
    for role in ROLES:
        d.wait_running(role)
    yield d
    d.close()


def test_ready_status_and_watchdog_reach_the_notify_socket(daemon):
    lines = daemon.notify.lines()
    assert "READY=1" in lines
    assert f"MAINPID={daemon.proc.pid}" in lines
    assert any(line.startswith("STATUS=") and "consumer RUNNING" in line for line in lines)
    wait_for(lambda: "WATCHDOG=1" in daemon.notify.lines(), 5, what="WATCHDOG=1")


def test_control_socket_is_private(daemon):
    assert oct(os.stat(daemon.socket).st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("role", ROLES)
def test_sigkilled_role_is_running_again_and_others_untouched(daemon, role):
    # How fast (the 2 s goal) is measured by benchmarks/supervisor.py: tests assert no wall-clock times.
    before = daemon.status()["roles"]
    os.kill(before[role]["pid"], signal.SIGKILL)
    after = daemon.wait_running(role, timeout=15.0, other_than_pid=before[role]["pid"])
    assert after["restarts"] == before[role]["restarts"] + 1
    now = daemon.status()["roles"]
    for other in set(ROLES) - {role}:
        assert now[other]["pid"] == before[other]["pid"]
        assert now[other]["restarts"] == before[other]["restarts"]


def test_msd_ctl_status_table_and_json(daemon):
    code, out = daemon.ctl("status")
    assert code == 0
    for role in ROLES:
        assert role in out and "RUNNING" in out
    code, out = daemon.ctl("--json", "status")
    assert code == 0 and '"consumer"' in out


def test_msd_ctl_status_json_after_the_subcommand_as_the_readme_shows(daemon):
    """Regression: `msd-ctl -s SOCK status --json`, the README's own form, exited 2."""
    code, out = daemon.ctl("status", "--json")          # runs `msd-ctl -s SOCK status --json`
    assert code == 0 and json.loads(out)["result"]["roles"]["consumer"]["state"] == "RUNNING"


def test_msd_ctl_bad_arguments_exit_2(daemon):
    assert daemon.ctl("frobnicate")[0] == 2


def _edit(daemon, **section_updates):
    cfg = yaml.safe_load(daemon.config_path.read_text())
    for section, values in section_updates.items():
        cfg.setdefault(section, {}).update(values)
    # Editors write a temp file and rename it over the original; watch must see that too.
    tmp = daemon.config_path.with_suffix(".yaml.swp")
    tmp.write_text(yaml.safe_dump(cfg))
    os.replace(tmp, daemon.config_path)


def _reloaded_after(daemon, loaded_at):
    return daemon.status()["daemon"]["config_loaded_at"] > loaded_at


def test_config_edit_is_live_and_restarts_only_the_changed_role(daemon):
    before = daemon.status()
    _edit(daemon, consumer={"batch_max": 150})
    wait_for(lambda: _reloaded_after(daemon, before["daemon"]["config_loaded_at"]), 15.0, what="config reload")
    daemon.wait_running("consumer", other_than_pid=before["roles"]["consumer"]["pid"])
    now = daemon.status()["roles"]
    assert now["signaller"]["pid"] == before["roles"]["signaller"]["pid"]
    assert now["exits"]["pid"] == before["roles"]["exits"]["pid"]
    assert any(r.get("message", "").startswith("config reloaded from file change") for r in daemon.log_records())


def test_live_section_edit_is_applied_without_restarting_the_role(daemon):
    before = daemon.status()
    _edit(daemon, signaller={"max_data_age_s": 12.5})
    wait_for(lambda: _reloaded_after(daemon, before["daemon"]["config_loaded_at"]), 15.0, what="config reload")
    wait_for(lambda: daemon.role("signaller")["status"].get("max_data_age_s") == 12.5, 2.0,
             what="signaller applied the new value")
    assert daemon.role("signaller")["pid"] == before["roles"]["signaller"]["pid"]


def test_invalid_edit_keeps_old_config_and_says_so(daemon):
    before = daemon.status()
    _edit(daemon, consumer={"prefetch": -1})
    error = wait_for(lambda: daemon.status()["daemon"]["config_error"], 15.0, what="config error in status")
    assert "consumer.prefetch" in error["message"]
    assert daemon.status()["roles"]["consumer"]["pid"] == before["roles"]["consumer"]["pid"]
    assert any("config reload failed" in line for line in daemon.notify.lines() if line.startswith("STATUS="))
    code, out = daemon.ctl("status")
    assert "CONFIG ERROR" in out and "consumer.prefetch" in out
    _edit(daemon, consumer={"prefetch": 500})
    wait_for(lambda: daemon.status()["daemon"]["config_error"] is None, 15.0, what="config error cleared")


def test_sighup_and_msd_ctl_reload_are_the_same_reload(daemon):
    loaded = daemon.status()["daemon"]["config_loaded_at"]
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.status()["daemon"]["config_loaded_at"] > loaded, 15.0, what="SIGHUP reload")
    code, out = daemon.ctl("reload")
    assert code == 0 and '"applied": true' in out
    assert "RELOADING=1" in daemon.notify.lines()


def _runs(dsn):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, status, error FROM msd.training_runs ORDER BY id")
        return cur.fetchall()


def test_second_training_request_cancels_the_running_job_and_starts_anew(daemon, resources):
    dsn, _ = resources
    first = daemon.call("retrain", reason="first")
    running = wait_for(lambda: daemon.status()["trainer"]["running"], 10, what="trainer running")
    first_pid = running["pid"]
    wait_for(lambda: len(_runs(dsn)) >= 1, 10, what="first run recorded")
    second = daemon.call("retrain", reason="second")
    wait_for(lambda: (daemon.status()["trainer"]["running"] or {}).get("id") == second["request_id"], 15,
             what="second run running")
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)
    recent = {r["request_id"]: r["outcome"] for r in daemon.status()["trainer"]["recent"]}
    assert recent[first["request_id"]] == "cancelled"
    runs = wait_for(lambda: [r for r in _runs(dsn) if r[1] == "cancelled"], 5, what="cancelled row")
    assert "SIGTERM" in runs[0][2]
    assert wait_for(lambda: len(_runs(dsn)) >= 2 and _runs(dsn)[-1][1] == "running", 10,
                    what="second run recorded as running")


def test_sigterm_stops_with_exit_0_and_ctl_then_exits_3(resources, tmp_path):
    dsn, vhost = resources
    d = Daemon(tmp_path, base_config(tmp_path, dsn, amqp_url(vhost)))
    try:
        d.start()
        for role in ROLES:
            d.wait_running(role)
        pids = [d.role(r)["pid"] for r in ROLES]
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(d.config["supervisor"]["stop_deadline_s"] + 2) == 0
        assert "STOPPING=1" in d.notify.lines()
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        code, out = d.ctl("status")
        assert code == 3 and "not running" in out
    finally:
        d.close()


def test_unread_notify_socket_never_stalls_the_supervisor_loop(resources, tmp_path):
    """Regression: WATCHDOG=1 went out every loop turn with a blocking send; once NOTIFY_SOCKET's
    queue (10 datagrams here) was full, the loop blocked, and with it respawns and msd-ctl."""
    dsn, vhost = resources
    d = Daemon(tmp_path, base_config(tmp_path, dsn, amqp_url(vhost)), read_notify=False,
               env={"WATCHDOG_USEC": "200000"})          # a ping due on every turn of the loop
    try:
        d.start(wait_ready=False)
        wait_for(lambda: _answers(d) and d.status()["daemon"]["state"] == "ready", 60, what="ready via msd-ctl")
        port = d.config["metrics"]["port"]
        wait_for(lambda: _scraped(port, "msd_systemd_notifications_dropped_total") > 0, 10,
                 what="notifications dropped, not waited for")
        before = d.role("exits")
        os.kill(before["pid"], signal.SIGKILL)
        d.wait_running("exits", timeout=10, other_than_pid=before["pid"])
        code, out = d.ctl("status")
        assert code == 0 and "RUNNING" in out
        assert _scraped(port, "msd_systemd_notifications_dropped_total") > 0
    finally:
        d.close()


def _answers(daemon) -> bool:
    try:
        daemon.status()
        return True
    except Exception:       # not up yet: no socket (ctl.NotRunning), or no answer yet
        return False


def _scraped(port: int, name: str) -> float:
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))
