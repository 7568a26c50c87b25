"""A JSON body's values are counted as its chunks arrive: however the body is cut, the count is the
one of the whole body, which is what refuses a body of too many values (413) before it is parsed."""

from __future__ import annotations

import itertools

import orjson
from hypothesis import given
from hypothesis import strategies as st

from runyard.server.security import JsonValues, json_values

_json = st.recursive(st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(alphabet='ab,[{"\\\n'),
                     lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(alphabet='k,"\\['), inner,
                                                                                 max_size=5), max_leaves=30)


def _values(value: object) -> int:
    if isinstance(value, list):
        return len(value) + sum(_values(v) for v in value)
    if isinstance(value, dict):
        return len(value) + sum(_values(v) for v in value.values())
    return 0


@given(_json, st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_the_count_does_not_depend_on_where_the_body_is_cut(value: object, cuts: list[int]) -> None:
    body = orjson.dumps(value)
    whole = json_values(body)
    # A container of n members has n - 1 commas and one opening bracket: never fewer than its members.
    assert whole >= _values(value)
    counter = JsonValues()
    edges = sorted({0, len(body), *(c for c in cuts if c <= len(body))})
    for start, end in itertools.pairwise(edges):
        counter.feed(body[start:end])
    assert counter.count == whole
