"""
Copy-on-write containers (``mls/copy_on_write.py``): each copy acts as an independent list or dict.

Each test drives several live copies through random operations and compares
each, after every step, with a plain ``list`` or ``dict`` that went through
the same operations.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from townsquare.mls.copy_on_write import CHUNK, CowCounter, CowList

# One step: (operation, which live copy, two arguments). The arguments are
# reduced modulo what makes sense at that moment, so every drawn step is valid.
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["copy", "set", "extend", "truncate", "assign"]),
        st.integers(0, 7),
        st.integers(0, 4 * CHUNK),
        st.integers(-3, 1000),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(initial=st.integers(0, 3 * CHUNK + 5), steps=STEPS)
def test_cow_list_copies_behave_as_independent_lists(
    initial: int, steps: list[tuple[str, int, int, int]]
) -> None:
    lists = [CowList(range(initial))]
    models = [list(range(initial))]
    for operation, which, a, b in steps:
        i = which % len(lists)
        cow, model = lists[i], models[i]
        if operation == "copy":
            lists.append(cow.copy())
            models.append(model.copy())
        elif operation == "set" and model:
            index = a % len(model)
            cow[index] = b
            model[index] = b
        elif operation == "extend":
            items = list(range(b, b + a % (2 * CHUNK)))
            cow.extend(items)
            model.extend(items)
        elif operation == "truncate":
            length = a % (len(model) + 1)
            cow.truncate(length)
            del model[length:]
        elif operation == "assign":
            items = list(range(a % (2 * CHUNK)))
            cow.assign(items)
            model[:] = items
        for live, expected in zip(lists, models, strict=True):
            assert len(live) == len(expected)
            assert live.to_list() == expected
            assert list(live) == expected
            if expected:
                assert live[len(expected) - 1] == expected[-1]


def test_cow_list_refuses_indices_outside_it() -> None:
    cow = CowList([1, 2, 3])
    for index in (-1, 3):
        with pytest.raises(IndexError):
            cow[index]
        with pytest.raises(IndexError):
            cow[index] = 0
    with pytest.raises(ValueError, match="truncate"):
        cow.truncate(4)
    assert cow.to_list() == [1, 2, 3]


COUNTER_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["copy", "add", "add", "add"]),
        st.integers(0, 7),
        st.integers(0, 300),
        st.integers(-2, 3),
    ),
    max_size=400,
)


@settings(max_examples=100, deadline=None)
@given(initial=st.integers(0, 200), steps=COUNTER_STEPS)
def test_cow_counter_copies_behave_as_independent_counters(
    initial: int, steps: list[tuple[str, int, int, int]]
) -> None:
    # Up to 400 changes over 300 keys: enough for copies to fold their changes
    # into a new base (more than 64 + base // 16 changed keys) several times.
    counters = [CowCounter({key: 1 for key in range(initial)})]
    models = [{key: 1 for key in range(initial)}]
    for operation, which, key, delta in steps:
        i = which % len(counters)
        counter, model = counters[i], models[i]
        if operation == "copy":
            counters.append(counter.copy())
            models.append(model.copy())
            continue
        change = max(delta, -model.get(key, 0))
        counter.add(key, change)
        model[key] = model.get(key, 0) + change
        if not model[key]:
            del model[key]
        for live, expected in zip(counters, models, strict=True):
            assert dict(live.items()) == expected
            assert set(live.keys()) == set(expected)
            assert live.all_once() == all(count == 1 for count in expected.values())
            for probe in (key, key + 1, -1):
                assert live.count(probe) == expected.get(probe, 0)
                assert (probe in live) == (probe in expected)


def test_cow_counter_refuses_a_negative_count() -> None:
    counter = CowCounter({b"key": 1})
    with pytest.raises(ValueError, match="negative"):
        counter.add(b"key", -2)
    assert counter.count(b"key") == 1


def test_cow_counter_folds_many_changes_into_a_new_base_without_changing_any_copy() -> None:
    counter = CowCounter({key: 1 for key in range(32)})
    before = counter.copy()
    for key in range(32, 32 + 100):
        counter.add(key, 1)
    for key in range(16):
        counter.add(key, -1)
    # 116 changed keys > 64 + 32 // 16: this copy folds them in first.
    after = counter.copy()
    counter.add(200, 1)
    expected = {key: 1 for key in range(16, 132)}
    assert dict(after.items()) == expected
    assert dict(counter.items()) == {**expected, 200: 1}
    assert dict(before.items()) == {key: 1 for key in range(32)}
