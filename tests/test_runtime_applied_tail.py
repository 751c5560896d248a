"""``AppliedTail``: where the last N bytes of applied entries begin (``--retain-bytes``)."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from logqueue.runtime.applied_tail import AppliedTail


@given(st.lists(st.integers(0, 50), min_size=1, max_size=40), st.integers(1, 5), st.integers(0, 400),
       st.integers(0, 45))
def test_start_of_last_is_the_lowest_index_whose_tail_fits(sizes, first, budget, forget):
    tail = AppliedTail()
    indexes = list(range(first, first + len(sizes)))
    for i, size in zip(indexes, sizes):
        tail.add(i, size)
    tail.forget_before(first + forget)  # a no-op below 4096 records, unless it forgets them all
    if forget >= len(sizes):
        assert tail.start_of_last(budget) is None  # nothing recorded: nothing known
        return
    expected = next((j for j in indexes if sum(sizes[j - first:]) <= budget), indexes[-1] + 1)
    assert tail.start_of_last(budget) == (None if sum(sizes) <= budget else expected)


def test_forgotten_entries_do_not_count():
    tail = AppliedTail()
    for i in range(1, 5001):
        tail.add(i, 10)
    tail.forget_before(4501)  # 4500 >= 4096 records: dropped
    assert tail.start_of_last(5000) is None  # the 500 left hold 5000 bytes: all fit
    assert tail.start_of_last(4990) == 4502
