"""The lease child's loop in-process against the real PostgreSQL: two instances compete, the
holder releases on leaving, and a leader whose migrations fail gives the lease up."""
import multiprocessing

import psycopg2
import pytest
import yaml

from msd.config import load_config
from msd.errors import MsdError
from msd.roles.lease import main as lease_main
from msd.roles.lease.decide import Role
from msd.roles.runtime.process import RoleContext
from msd.supervisor.spawn import ChildSpec


def loop_for(tmp_path, dsn, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"database": {"dsn": dsn},
                                    "leadership": {"enabled": True, "instance": name,
                                                   "lease_renew_s": 0.5, "failover_s": 5}}))
    supervisor_end, child_end = multiprocessing.Pipe()
    spec = ChildSpec(name="lease", module="msd.roles.lease.main", config=load_config(path, env={}),
                     conn=child_end, args={"holder": f"{name}/1", "supervisor_pid": 1})
    return lease_main.LeaseLoop(RoleContext(spec)), supervisor_end


def told(end):
    events = []
    while end.poll():
        kind, data = end.recv()
        if kind == "event" and data.get("kind") == "lease":
            events.append((data["role"], data["epoch"]))
    return events


def events(dsn):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT epoch, event, holder, detail FROM msd.leadership_events ORDER BY id")
        return cur.fetchall()


def test_one_leads_the_other_stands_by_and_leaving_hands_over(db, fresh_pg_dsn, tmp_path):
    a, a_end = loop_for(tmp_path, fresh_pg_dsn, "box-a")
    b, b_end = loop_for(tmp_path, fresh_pg_dsn, "box-b")
    a.turn()
    b.turn()
    assert told(a_end) == [("leader", 1)] and told(b_end) == []
    assert (a.belief.role, b.belief.role) == (Role.LEADER, Role.STANDBY)
    assert b.row.holder == "box-a/1" and b.expires_in() > 0
    a.turn()                                   # renews: nothing to tell
    assert told(a_end) == [] and a.belief.role is Role.LEADER
    a.leave()
    b.turn()
    assert told(b_end) == [("leader", 2)]
    assert [e[:3] for e in events(fresh_pg_dsn)] == [(1, "acquired", "box-a/1"), (1, "released", "box-a/1"),
                                                     (2, "acquired", "box-b/1")]


def test_a_leader_whose_migrations_fail_releases_the_lease_and_stands_by(db, fresh_pg_dsn, tmp_path, monkeypatch):
    def failing(_dsn):
        raise MsdError("migration 999_x.sql failed: syntax error")
    monkeypatch.setattr(lease_main, "apply_migrations", failing)
    a, a_end = loop_for(tmp_path, fresh_pg_dsn, "box-a")
    a.turn()
    assert a.belief.role is Role.STANDBY and told(a_end) == []
    assert a.belief.hold_off_until > 0
    assert [e[1] for e in events(fresh_pg_dsn)] == ["acquired", "released"]
    assert "migrations failed" in events(fresh_pg_dsn)[-1][3]
    b, b_end = loop_for(tmp_path, fresh_pg_dsn, "box-b")
    monkeypatch.setattr(lease_main, "apply_migrations", lambda _dsn: [])
    b.turn()
    assert told(b_end) == [("leader", 2)]


def test_a_standby_hears_the_release_at_once_instead_of_waiting_a_period(db, fresh_pg_dsn, tmp_path):
    a, _ = loop_for(tmp_path, fresh_pg_dsn, "box-a")
    b, b_end = loop_for(tmp_path, fresh_pg_dsn, "box-b")
    a.turn()
    b.turn()
    assert b.belief.role is Role.STANDBY and not b.heard_release()
    a.leave()
    assert wait_heard(b)
    b.turn()
    assert told(b_end) == [("leader", 2)]


def wait_heard(loop, timeout=10.0):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if loop.heard_release():
            return True
        time.sleep(0.05)
    return False
