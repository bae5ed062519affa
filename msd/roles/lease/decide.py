"""What the lease child does next and what an attempt's outcome means: pure functions.

The lease child (msd.roles.lease.main) runs a loop: `next_action` says which database
operation to try now, the edge performs it, and `after` turns the outcome into the new belief
and, when the role changed, a `Transition` the supervisor acts on. Times are the child's
monotonic clock, taken when the attempt was *sent*: the database starts the lease's validity
after that, so a belief measured from the send is never later than the truth.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum


class Role(str, Enum):
    LEADER = "leader"
    STANDBY = "standby"


class Action(str, Enum):
    ACQUIRE = "acquire"      # standby: take the lease if it is free or expired
    RENEW = "renew"          # leader: extend it
    RELEASE = "release"      # leader asked to step down: give it up now
    WAIT = "wait"            # standby holding off after a step-down


class Result(str, Enum):
    DONE = "done"            # acquired / renewed / released
    REFUSED = "refused"      # the conditional UPDATE matched nothing: someone else holds it
    FAILED = "failed"        # the database could not be asked (connection, timeout, ...)


@dataclass(frozen=True)
class Timing:
    renew_s: float
    failover_s: float
    lost_after_s: float      # a leader without a renewal for this long gives up (before expiry)


@dataclass(frozen=True)
class Belief:
    role: Role = Role.STANDBY
    epoch: int | None = None
    renewed_at: float | None = None       # when the last successful acquire/renew was sent
    step_down: bool = False               # asked to hand over
    hold_off_until: float = 0.0           # after a step-down: let another instance take it first


@dataclass(frozen=True)
class Transition:
    to: Role
    epoch: int | None
    reason: str
    event: str | None        # the audit event ("acquired", "lost", "stepped_down"), None if none


def next_action(belief: Belief, now: float) -> Action:
    if belief.role is Role.LEADER:
        return Action.RELEASE if belief.step_down else Action.RENEW
    return Action.WAIT if now < belief.hold_off_until else Action.ACQUIRE


def after(belief: Belief, action: Action, result: Result, epoch: int | None, sent_at: float,
          now: float, timing: Timing) -> tuple[Belief, Transition | None]:
    """The belief after `action` sent at `sent_at` ended with `result` (`epoch`: the lease's
    epoch when acquired or renewed); a Transition when this instance's role changed."""
    if action is Action.ACQUIRE and result is Result.DONE:
        return (Belief(Role.LEADER, epoch, sent_at),
                Transition(Role.LEADER, epoch, f"acquired the lease (epoch {epoch})", "acquired"))
    if action is Action.RENEW and result is Result.DONE:
        return replace(belief, renewed_at=sent_at), None
    if action is Action.RENEW and result is Result.REFUSED:
        return (Belief(),
                Transition(Role.STANDBY, belief.epoch, f"the lease of epoch {belief.epoch} was taken over", "lost"))
    if action is Action.RELEASE:
        # Released or not (the database may be unreachable): we stop leading now; the lease
        # expires by itself if the release did not reach the database.
        # Out of the competition for two renewal periods: a standby (asking every period) takes
        # the released lease first; with no standby, we take it back.
        return (Belief(hold_off_until=now + 2 * timing.renew_s),
                Transition(Role.STANDBY, belief.epoch, "stepped down", "stepped_down"))
    if belief.role is Role.LEADER:
        return expire(belief, now, timing)
    return belief, None


def expire(belief: Belief, now: float, timing: Timing) -> tuple[Belief, Transition | None]:
    """A leader whose last successful renewal is older than `lost_after_s` stops leading, so
    its roles are stopped before the lease can expire and another instance takes it."""
    if belief.role is not Role.LEADER or belief.renewed_at is None:
        return belief, None
    silent = now - belief.renewed_at
    if silent <= timing.lost_after_s:
        return belief, None
    return (Belief(),
            Transition(Role.STANDBY, belief.epoch,
                       f"could not renew the lease of epoch {belief.epoch} for {silent:.1f}s "
                       f"(limit {timing.lost_after_s:g}s, lease {timing.failover_s:g}s)", "lost"))


def wait_before_next(belief: Belief, now: float, timing: Timing, expires_in: float | None = None) -> float:
    """Seconds until the next attempt: a renewal period, shorter when a leader's limit, a
    hold-off or (for a standby) the other holder's lease, `expires_in` seconds from now by the
    database's clock, ends sooner: a standby asks right after the lease expires."""
    wait = timing.renew_s
    if belief.role is Role.LEADER and belief.renewed_at is not None:
        wait = min(wait, max(0.0, belief.renewed_at + timing.lost_after_s - now) + 0.001)
    elif belief.hold_off_until > now:
        wait = min(wait, belief.hold_off_until - now)
    elif expires_in is not None:
        wait = min(wait, max(0.0, expires_in) + 0.01)
    return wait
