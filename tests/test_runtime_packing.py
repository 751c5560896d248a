"""``logqueue.packing``: parts and ``packb`` give msgpack's own bytes, large bins referenced."""
from __future__ import annotations

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from logqueue.packing import LARGE, pack_parts, packb

leaves = st.one_of(st.none(), st.integers(-2**63, 2**64 - 1), st.text(max_size=5), st.binary(max_size=8),
                   st.sampled_from([b"L" * LARGE, b"M" * (LARGE + 7)]))
values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=20), st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 99)), inner, max_size=20)),
    max_leaves=40)


@given(values)
def test_packb_gives_msgpacks_bytes(value):
    assert packb(value) == msgpack.packb(value, use_bin_type=True)


def test_large_bins_are_referenced_not_copied():
    big = b"x" * (LARGE + 1)
    assert any(part is big for part in pack_parts({"k": [1, big]}))
    assert packb({str(i): i for i in range(1 << 16)}) == msgpack.packb({str(i): i for i in range(1 << 16)})
