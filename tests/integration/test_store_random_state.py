"""The strategies' random streams saved and loaded on the real database."""
import random

from msd.store.db import Database
from msd.store.migrate import apply_migrations
from msd.store.random_state import RandomState, load_random_states, save_random_states


def test_states_saved_in_one_statement_load_back_and_leave_the_session_synchronous(fresh_pg_dsn):
    apply_migrations(fresh_pg_dsn)
    db = Database(fresh_pg_dsn)
    try:
        a, b = random.Random(1), random.Random(2)
        a.random(), b.random(), b.random()
        with db.autocommit() as conn:
            save_random_states(conn, [RandomState("a", 1, 1, a.getstate()), RandomState("b", 2, 2, b.getstate())])
            b.random()
            save_random_states(conn, [RandomState("b", 2, 3, b.getstate())])     # an upsert
            save_random_states(conn, [])
            with conn.cursor() as cur:
                cur.execute("SHOW synchronous_commit")      # SET LOCAL: this save only
                assert cur.fetchone()[0] == "on"
        with db.transaction() as conn:
            loaded = load_random_states(conn, ["a", "b", "c"])
        assert set(loaded) == {"a", "b"}
        assert (loaded["a"].seed, loaded["a"].draws, loaded["a"].state) == (1, 1, a.getstate())
        assert (loaded["b"].seed, loaded["b"].draws, loaded["b"].state) == (2, 3, b.getstate())
    finally:
        db.close()

