import pytest

from segkit.score import always_kept, consistency, select, strength, top_by_cumulative


def test_strength_and_consistency_by_hand():
    a = [[1.0, -1.0, 2.0, 0.0], [3.0], [], [0.0, 0.0]]
    raw = [4 / 2, 3 / 1, 0, 0]
    assert strength(a) == pytest.approx([r / sum(raw) for r in raw])
    assert consistency(a) == pytest.approx([2 / 4, 1.0, 0.0, 0.0])
    assert sum(strength(a)) == pytest.approx(1.0)
    assert strength([[0.0], [0.0, 0.0]]) == [0.0, 0.0]  # all zero: no division by zero


def test_select_rule_hand_cases():
    # strongest first until cumulative >= tau, then the consistency filter, indices sorted
    assert select([0.5, 0.3, 0.2], [0.9, 0.4, 0.1], tau=0.7, beta=0.8) == [1]
    assert select([0.5, 0.3, 0.2], [0.9, 0.4, 0.1], tau=0.9, beta=0.8) == [1, 2]
    assert select([0.2, 0.5, 0.3], [0.1, 0.1, 0.1], tau=0.5, beta=0.8) == [1]  # reaching tau exactly stops
    assert select([0.1, 0.6, 0.3], [0.8, 0.8, 0.81], tau=1.0, beta=0.8) == [0, 1]  # <= beta kept
    # ties: the earlier segment first
    assert top_by_cumulative([0.25, 0.25, 0.25, 0.25], 0.5) == [0, 1]
    assert select([0.25] * 4, [0.5] * 4, tau=0.3) == [0, 1]
    # a single segment; all-zero attributions
    assert select([1.0], [0.2]) == [0]
    assert select([1.0], [0.95]) == []
    assert select(*[strength([[0.0], [0.0]]), consistency([[0.0], [0.0]])]) == []


def test_always_kept():
    assert always_kept(5) == [0, 3, 4]
    assert always_kept(2) == [0, 1]
    assert always_kept(1) == [0]
    assert always_kept(4, ["last"]) == [3]
    with pytest.raises(ValueError):
        always_kept(3, ["middle"])
