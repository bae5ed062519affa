"""Two real daemons, one database and vhost: exactly one leads; step-down, a graceful stop and
a SIGKILL of the leader's whole process tree hand the lease over (issue #14)."""
import json
import urllib.request

import psycopg2
import pytest

from tests.fixtures.rabbit import amqp_url
from tests.integration.daemon import Daemon, base_config, kill_tree, wait_for

pytestmark = pytest.mark.integration
ROLES = ("consumer", "signaller", "exits")
LEASE = {"enabled": True, "lease_renew_s": 0.5, "failover_s": 3}


@pytest.fixture(scope="module")
def pair(resources, tmp_path_factory):
    dsn, vhost = resources
    daemons = {}
    for name in ("box-a", "box-b"):
        tmp = tmp_path_factory.mktemp(name)
        daemons[name] = Daemon(tmp, base_config(tmp, dsn, amqp_url(vhost), leadership={**LEASE, "instance": name},
                                                trainer={"job": "tests.jobs:slow_summary"}))
    for d in daemons.values():      # both at once
        d.start(wait_ready=False)
    for d in daemons.values():
        wait_for(lambda: "READY=1" in d.notify.lines() or d.proc.poll() is not None, 60, what="READY=1")
        assert d.proc.poll() is None, d.tail()
    yield daemons
    for d in daemons.values():
        d.close()


def leadership(d):
    return d.status()["leadership"]


def roles_of(d):
    return {name: r["state"] for name, r in d.status()["roles"].items()}


def the_leader(pair, timeout=30.0):
    """(leader, standby) once exactly one leads and runs every role."""
    def settled():
        views = {name: leadership(d) for name, d in pair.items()}
        leaders = [name for name, v in views.items() if v["role"] == "leader"]
        if len(leaders) != 1 or set(roles_of(pair[leaders[0]]).values()) != {"RUNNING"}:
            return None
        standby = next(name for name in pair if name != leaders[0])
        return views[standby]["role"] == "standby" and (pair[leaders[0]], pair[standby])
    return wait_for(settled, timeout, interval=0.1, what="exactly one leader")


def events(dsn):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT epoch, event, holder FROM msd.leadership_events ORDER BY id")
        return cur.fetchall()


def healthz(d):
    with urllib.request.urlopen(f"http://127.0.0.1:{d.config['metrics']['port']}/healthz", timeout=5) as reply:
        return reply.status, json.loads(reply.read())


def test_started_together_exactly_one_leads_and_the_standby_runs_nothing(pair, resources):
    leader, standby = the_leader(pair)
    assert set(roles_of(standby).values()) == {"STOPPED"}
    assert healthz(standby) == (200, {"healthy": True, "role": "standby", "problems": []})
    assert healthz(leader)[1]["role"] == "leader"
    view = leadership(standby)
    assert view["lease"]["holder"] == leadership(leader)["holder_name"]
    code, out = standby.ctl("retrain")
    assert code == 1 and "standby" in out
    code, out = standby.ctl("status")
    assert code == 0 and "is STANDBY" in out and f"lease held by {view['lease']['holder']}" in out
    assert [e[1] for e in events(resources[0])].count("acquired") == 1


def test_a_standby_applies_a_reload_to_its_own_config_and_starts_nothing(pair):
    leader, standby = the_leader(pair)
    loaded = standby.status()["daemon"]["config_loaded_at"]
    standby.config["consumer"]["batch_wait_ms"] = 3          # the consumer would restart for this
    standby.write_config(standby.config)
    code, out = standby.ctl("reload")
    assert code == 0 and '"applied": true' in out
    assert standby.status()["daemon"]["config_loaded_at"] > loaded
    assert set(roles_of(standby).values()) == {"STOPPED"}
    assert leadership(standby)["role"] == "standby" and leadership(leader)["role"] == "leader"


def test_step_down_hands_the_lease_to_the_standby(pair, resources):
    leader, standby = the_leader(pair)
    epoch = leadership(leader)["epoch"]
    code, out = leader.ctl("step-down")
    assert code == 0, out
    wait_for(lambda: leadership(standby)["role"] == "leader", 30, what="the standby leads")
    new_leader, new_standby = the_leader(pair)
    assert (new_leader, new_standby) == (standby, leader)
    assert leadership(new_leader)["epoch"] == epoch + 1
    assert (epoch, "stepped_down", leadership(leader)["holder_name"]) in events(resources[0])
    assert set(roles_of(leader).values()) == {"STOPPED"}
    code, out = leader.ctl("step-down")
    assert code == 1 and "standby" in out


def test_a_graceful_stop_releases_the_lease_and_the_sigkilled_leaders_lease_expires(pair, resources):
    leader, standby = the_leader(pair)
    holder = leadership(leader)["holder_name"]
    assert leader.stop() == 0
    assert any(e[1:] == ("released", holder) for e in events(resources[0]))
    wait_for(lambda: leadership(standby)["role"] == "leader", 30, what="standby leads after the stop")
    leader.notify.messages.clear()
    leader.start()                                  # back, as the standby
    leader, standby = the_leader(pair)
    epoch = leadership(leader)["epoch"]
    killed = kill_tree(leader)
    assert len(killed) >= 5                         # supervisor, lease child, three roles
    wait_for(lambda: leadership(standby)["role"] == "leader"
             and set(roles_of(standby).values()) == {"RUNNING"}, 60, what="the standby leads")
    assert leadership(standby)["epoch"] == epoch + 1
