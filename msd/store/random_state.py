"""Where each strategy's random stream is (`msd.strategy_random_state`), so a restart continues it.

The row holds the configured seed, how many decisions drew from the stream (`draws`, for
people) and the generator's full state; a row whose seed differs from the configured one is
ignored (a new seed starts a new stream).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from msd.store.jsonb import to_json


@dataclass(frozen=True)
class RandomState:
    strategy_id: str
    seed: int
    draws: int
    state: tuple            # random.Random.getstate()


def _to_json(state: tuple) -> str:
    version, internal, gauss_next = state
    return to_json({"version": version, "internal": list(internal), "gauss_next": gauss_next})


def _from_json(data: Any) -> tuple:
    return (int(data["version"]), tuple(int(x) for x in data["internal"]), data["gauss_next"])


def load_random_states(conn, strategy_ids: Iterable[str]) -> dict[str, RandomState]:
    with conn.cursor() as cur:
        cur.execute("SELECT strategy_id, seed, draws, state FROM msd.strategy_random_state WHERE strategy_id = ANY(%s)",
                    (list(strategy_ids),))
        return {sid: RandomState(sid, int(seed), draws, _from_json(state)) for sid, seed, draws, state in cur.fetchall()}


def save_random_states(conn, states: Iterable[RandomState]) -> None:
    """Upsert the states in one statement string, committed without waiting for the WAL flush
    (see msd.roles.signaller.random_streams for what that risks): on an autocommit connection,
    one round trip and one implicit transaction."""
    rows = [(item.strategy_id, str(item.seed), item.draws, _to_json(item.state)) for item in states]
    if not rows:
        return
    with conn.cursor() as cur:
        values = b",".join(cur.mogrify("(%s, %s, %s, %s::jsonb)", row) for row in rows)
        cur.execute(b"SET LOCAL synchronous_commit TO off;\n"
                    b"INSERT INTO msd.strategy_random_state (strategy_id, seed, draws, state) VALUES " + values +
                    b""" ON CONFLICT (strategy_id) DO UPDATE SET seed = EXCLUDED.seed, draws = EXCLUDED.draws,
                               state = EXCLUDED.state, updated_at = now()""")
