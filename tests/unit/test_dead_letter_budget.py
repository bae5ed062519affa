"""Dead letters are bounded per source: beyond the cap they are counted, not stored."""
from msd.store.deadletters import DeadLetter, DeadLetterBudget


def letters(source, n, reason="bad_json"):
    return [DeadLetter(source, reason, None, b"x", None, None) for _ in range(n)]


def test_beyond_the_cap_a_source_is_only_counted():
    budget = DeadLetterBudget(5, {"q.orders": 3})
    kept, overflow = budget.split(letters("q.orders", 4) + letters("q.ticks", 2, "bad_text"))
    assert [k.source for k in kept] == ["q.orders", "q.orders", "q.ticks", "q.ticks"]
    assert dict(overflow) == {("q.orders", "bad_json"): 2}
    budget.committed(kept)
    kept, overflow = budget.split(letters("q.orders", 1))
    assert kept == [] and dict(overflow) == {("q.orders", "bad_json"): 1}


def test_a_split_that_was_not_committed_uses_no_budget():
    budget = DeadLetterBudget(2)
    budget.split(letters("q", 2))                 # its transaction rolled back
    kept, _ = budget.split(letters("q", 2))
    assert len(kept) == 2


def test_a_purge_gives_the_budget_back():
    budget = DeadLetterBudget(1, {"q": 1})
    assert budget.split(letters("q", 1))[0] == []
    budget.reset({})
    assert len(budget.split(letters("q", 1))[0]) == 1
