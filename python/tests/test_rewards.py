"""GRPO advantages against verl's formula written out in numpy."""

import numpy as np
import pytest

import rollcall


def verl_reference(scores, index, epsilon=1e-6, norm=True):
    """verl's GRPO outcome advantage: per group mean and unbiased std, a
    group of one has mean 0 and std 1 (float64 here)."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.empty_like(scores)
    for g in np.unique(index):
        members = np.flatnonzero(index == g)
        group = scores[members]
        if len(group) == 1:
            mean, std = 0.0, 1.0
        else:
            mean, std = group.mean(), group.std(ddof=1)
        out[members] = (group - mean) / (std + epsilon) if norm else group - mean
    return out


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("epsilon", [1e-6, 1e-2])
def test_grpo_matches_verl_formula(norm, epsilon):
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 9, size=60)
    index = np.repeat([f"uid-{i}" for i in range(60)], sizes)
    rng.shuffle(index)                      # groups not contiguous
    scores = rng.normal(size=len(index)).astype(np.float32)
    got = rollcall.grpo_advantages(scores, index, epsilon=epsilon,
                                   norm_adv_by_std_in_grpo=norm)
    ref = verl_reference(scores, index, epsilon, norm)
    assert got.dtype == np.float32 and got.shape == scores.shape
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5)


def test_grpo_binary_rewards_and_flat_groups():
    scores = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=np.float32)
    index = np.array([0, 0, 0, 0, 5, 5, 5, 5, 9])
    got = rollcall.grpo_advantages(scores, index)
    ref = verl_reference(scores, index)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    assert (got[4:8] == 0).all()            # flat group: exactly 0
    # verl: a group of one has mean 0, std 1 (float32 arithmetic, as torch)
    assert got[8] == np.float32(1) / (np.float32(1) + np.float32(1e-6))
    rc = rollcall.grpo_advantages(scores, index, convention="rollcall")
    assert rc[8] == 0                       # rollcall: a group of one carries no signal


def test_grpo_2d_rows_are_groups():
    rng = np.random.default_rng(1)
    scores = rng.random((32, 8))
    got = rollcall.grpo_advantages(scores)
    ref = verl_reference(scores.ravel(), np.repeat(np.arange(32), 8)).reshape(32, 8)
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5)
    with pytest.raises(rollcall.ShapeError):
        rollcall.grpo_advantages(scores, np.arange(256))


def test_grpo_tail_estimator_agrees():
    rng = np.random.default_rng(2)
    rewards = rng.random((10, 6)).astype(np.float32)
    est = rollcall.estimate(rewards, "grpo", eps=1e-4)
    adv = rollcall.grpo_advantages(rewards, epsilon=1e-4, convention="rollcall")
    np.testing.assert_allclose(est["advantages"], adv, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(est["values"], rewards.mean(axis=1), rtol=1e-6)


def test_grpo_errors():
    with pytest.raises(rollcall.NonFiniteError):
        rollcall.grpo_advantages([1.0, float("nan")], [0, 0])
    with pytest.raises(rollcall.InvalidValueError):
        rollcall.grpo_advantages([1.0, 2.0], [0, 0], epsilon=-1)
    with pytest.raises(rollcall.ShapeError):
        rollcall.grpo_advantages([1.0, 2.0], [0, 0, 1])
    with pytest.raises(rollcall.ShapeError):
        rollcall.grpo_advantages([1.0, 2.0])
    with pytest.raises(rollcall.DTypeError):
        rollcall.grpo_advantages(["a", "b"], [0, 0])
    with pytest.raises(rollcall.DTypeError):
        rollcall.grpo_advantages([1.0, 2.0], np.array([1, "x"], dtype=object))
