"""Best-of-N tails against direct computations."""

from itertools import combinations
from math import comb, ceil

import numpy as np
import pytest

import rollcall


def test_pass_at_k_matches_combinations():
    n = np.array([10, 10, 10, 16, 5])
    c = np.array([0, 3, 10, 4, 5])
    got = rollcall.pass_at_k(n, c, 4)
    ref = [1 - comb(int(m - x), 4) / comb(int(m), 4) for m, x in zip(n, c)]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert rollcall.pass_at_k(5, 2, 2).shape == ()
    assert rollcall.pass_at_k([[8]], [1, 2, 3], 3).shape == (1, 3)
    with pytest.raises(rollcall.InvalidValueError):
        rollcall.pass_at_k(3, 4, 1)
    with pytest.raises(rollcall.InvalidValueError):
        rollcall.pass_at_k(3, 1, 0)


def test_max_at_k_and_pkpo_weights_match_subsets():
    rng = np.random.default_rng(4)
    rewards = rng.random((6, 7)).astype(np.float32)
    rewards[2, 3] = rewards[2, 5]          # a tie shares credit
    k = 3
    values = rollcall.max_at_k(rewards, k)
    weights = rollcall.pkpo_weights(rewards, k)
    for p, row in enumerate(rewards.astype(np.float64)):
        subsets = list(combinations(range(len(row)), k))
        maxima = [row[list(s)].max() for s in subsets]
        assert values[p] == pytest.approx(np.mean(maxima), rel=1e-5)
        # PKPO's weight of i: the sum of the maxima of the subsets holding i,
        # over C(m, k); equal rewards share their weights evenly.
        ref = np.array([sum(mx for s, mx in zip(subsets, maxima) if i in s)
                        for i in range(len(row))]) / len(subsets)
        for r in np.unique(row):
            ref[row == r] = ref[row == r].mean()
        np.testing.assert_allclose(weights[p], ref, rtol=1e-5, atol=1e-6)
        assert weights[p].sum() == pytest.approx(k * values[p], rel=1e-5)
    assert weights[2, 3] == weights[2, 5]


def test_too_few_and_lengths():
    rewards = np.array([[1.0, 2.0, 3.0, 0.0], [5.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    out = rollcall.estimate(rewards, "max@k", n=2, lengths=[3, 1])
    assert out["status"] == ["ok", "too-few"]
    assert out["values"][0] == pytest.approx((2 + 3 + 3) / 3)
    assert np.isnan(out["values"][1])
    assert out["advantages"][0, 3] == 0 and not out["advantages"][1].any()
    with pytest.raises(rollcall.InvalidValueError):
        rollcall.estimate(rewards, "max@k", n=2, lengths=[5, 1])


def test_pass_at_k_estimator():
    rewards = np.array([[1, 0, 0, 1, 0, 0, 0, 0]], dtype=np.float32)
    out = rollcall.estimate(rewards, "pass@k", k=3)
    assert out["values"][0] == pytest.approx(1 - comb(6, 3) / comb(8, 3), rel=1e-5)
    assert out["advantages"][0, 0] > 0 > out["advantages"][0, 1]


def test_tea_and_prefix_tea():
    rng = np.random.default_rng(5)
    rewards = rng.normal(size=(4, 64)).astype(np.float32)
    t = rollcall.tea(rewards, n=128, alpha=0.25)
    assert t["status"] == ["ok"] * 4 and t["values"].shape == (4,)
    # Only the top ceil(alpha m) rollouts carry an advantage.
    top = ceil(0.25 * 64)
    assert ((t["advantages"] != 0).sum(axis=1) <= top).all()
    # The value is the tail mean plus a positive multiple of its deviation.
    tail = np.sort(rewards, axis=1)[:, -top:]
    assert (t["values"] > tail.mean(axis=1)).all()
    p = rollcall.prefix_tea(rewards, n=128, alpha=0.25, prefixes=4)
    assert p["status"] == ["ok"] * 4
    short = rollcall.prefix_tea(rewards[:, :5], n=16, alpha=0.25, prefixes=4)
    assert short["status"] == ["fallback"] * 4
    with pytest.raises(rollcall.InvalidEstimatorError):
        rollcall.tea(rewards, n=128, alpha=1.5)
    with pytest.raises(rollcall.InvalidEstimatorError):
        rollcall.estimate(rewards, "nope", n=2)


def test_order_and_top_k():
    rewards = np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 0.0, 0.0, 0.0]])
    ranks, values, index = rollcall.order(rewards, lengths=[4, 1])
    assert ranks.tolist() == [[3, 0, 1, 2], [0, -1, -1, -1]]
    assert index.tolist() == [[1, 2, 3, 0], [0, -1, -1, -1]]
    v, i = rollcall.top_k(rewards, 2, lengths=[4, 1])
    assert v[0].tolist() == [3.0, 3.0] and i.tolist() == [[1, 2], [0, -1]]
    assert v[1, 1] == -np.inf
