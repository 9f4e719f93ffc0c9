"""device="gpu" against device="cpu" on seeded random inputs, awkward shapes
included (0 prompts, 1 vote, widths not a multiple of 64, all-padding rows,
ties). The bad device string is tested in test_errors.py (no adapter needed).

These tests need a GPU adapter (a CPU one such as Mesa's lavapipe will do).
Without one they fail, never skip, unless the user opted out with
ROLLCALL_ALLOW_NO_GPU=1, the convention of the Rust GPU tests (CI never
sets it).

What is compared:
- replay, Voter and majority_rewards: answer ids, votes, rounds, masks and
  rewards exactly; confidence to 1e-4 (f32 on both sides, the GPU's exp and
  log differ in the last bits). Beta and Dirichlet compare a probability
  with their threshold, so a prompt within rounding of it may stop a round
  apart: at most 1% of their prompts may differ.
- _twin_replay (rollcall's GPU Scheduler against its CPU round loop):
  the same, rewards exactly, advantages to 1e-4 relative.
- estimate: status exactly, values and advantages to 1e-4 of each row's
  scale (GPD's advantages 1e-3); order and top_k exactly.
"""

import os

import numpy as np
import pytest

import rollcall

ALLOW_NO_GPU = "ROLLCALL_ALLOW_NO_GPU"


@pytest.fixture(scope="module", autouse=True)
def gpu_adapter():
    """Fails (or, with the opt-out, skips) when no adapter can be opened."""
    try:
        rollcall.estimate(np.ones((1, 2), dtype=np.float32), "grpo", device="gpu")
    except rollcall.GpuError as e:
        if os.environ.get(ALLOW_NO_GPU) == "1":
            pytest.skip(f"no GPU adapter ({ALLOW_NO_GPU}=1): {e}")
        pytest.fail(
            f"the GPU tests need an adapter and none could be opened: {e}. Install a "
            f"Vulkan driver (Mesa's lavapipe: mesa-vulkan-drivers), or set "
            f"{ALLOW_NO_GPU}=1 to skip them.",
            pytrace=False,
        )


def answers_like(prompts, votes, seed, alphabet=6, pad=0.2):
    """Seeded answers with ties and padding anywhere; every third row is
    mostly one answer (early stops), row 1 (if any) is all padding."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, alphabet, size=(prompts, votes))
    decisive = np.arange(prompts) % 3 == 0
    out[decisive] = np.where(rng.random((decisive.sum(), votes)) < 0.9, 2,
                             out[decisive])
    out[rng.random((prompts, votes)) < pad] = -1
    if prompts > 1:
        out[1] = -1
    return out


SHAPES = [(0, 5), (3, 0), (1, 1), (7, 1), (50, 24), (33, 65), (65, 127)]

# Rules whose stop decisions the GPU reproduces exactly, and those that
# compare a probability with a threshold (near-threshold flips allowed).
EXACT_RULES = ["fixed", "consol-sprt", "consol-msprt", "margin:2", "esc:4",
               "majority:0.7", "entropy:0.6", "optpo", "predictive:0.5:0.02"]
THRESHOLD_RULES = ["beta", "dirichlet:0.9:3"]


def assert_same_outcome(gpu, cpu, keys, allowed_flips=0.0):
    """Ids, counts and masks equal, confidence within 1e-4; with
    allowed_flips, that share of prompts may stop elsewhere."""
    assert set(gpu) == set(cpu)
    for key in gpu:
        if isinstance(cpu[key], np.ndarray):
            assert gpu[key].dtype == cpu[key].dtype, key
            assert gpu[key].shape == cpu[key].shape, key
    n = len(cpu["votes"])
    differ = np.zeros(n, dtype=bool)
    for key in keys:
        d = gpu[key] != cpu[key]
        differ |= d.any(axis=1) if d.ndim > 1 else d
    assert differ.sum() <= allowed_flips * n, (
        f"{differ.sum()} of {n} prompts differ: {np.flatnonzero(differ)[:10]}")
    same = ~differ
    np.testing.assert_allclose(gpu["confidence"][same], cpu["confidence"][same],
                               rtol=0, atol=1e-4)
    if allowed_flips == 0:
        assert gpu["rounds"] == cpu["rounds"]


REPLAY_KEYS = ["consensus", "votes", "stopped_in_round", "exhausted", "used"]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spec", EXACT_RULES + THRESHOLD_RULES)
@pytest.mark.parametrize("allocation,chunk", [("chunk", 1), ("chunk", 3), ("fewest", 2)])
def test_replay_gpu_matches_cpu(shape, spec, allocation, chunk):
    answers = answers_like(*shape, seed=shape[0] * 131 + shape[1] + len(spec) + chunk)
    rule = rollcall.Rule.from_spec(spec, min_votes=2, max_votes=min(64, max(2, shape[1])))
    kw = dict(allocation=allocation, chunk=chunk, capacity=8)
    cpu = rollcall.replay(answers, rule, device="cpu", **kw)
    gpu = rollcall.replay(answers, rule, device="gpu", **kw)
    flips = 0.01 if spec in THRESHOLD_RULES else 0.0
    assert_same_outcome(gpu, cpu, REPLAY_KEYS, flips)


def test_replay_gpu_exhausted_and_padding():
    answers = np.array([[1, 2, -1, -1], [3, 3, 3, 3], [-1, -1, -1, -1], [-1, 5, -1, 5]])
    rule = rollcall.Rule("fixed", max_votes=4)
    cpu = rollcall.replay(answers, rule, chunk=1)
    gpu = rollcall.replay(answers, rule, chunk=1, device="gpu")
    assert gpu["exhausted"].tolist() == [True, False, True, True]
    assert gpu["votes"].tolist() == [2, 4, 0, 2]
    assert gpu["consensus"].tolist() == [1, 3, -1, 5]
    assert_same_outcome(gpu, cpu, REPLAY_KEYS)


def test_replay_gpu_capacity_overflow_and_ties():
    # More distinct answers than the tables hold, and exact ties (first seen wins).
    rng = np.random.default_rng(5)
    answers = rng.integers(0, 40, size=(40, 48))
    answers[0] = np.tile([7, 9], 24)
    for spec in ["fixed", "majority:0.5", "consol-sprt"]:
        rule = rollcall.Rule.from_spec(spec, max_votes=48)
        cpu = rollcall.replay(answers, rule, capacity=4, chunk=5)
        gpu = rollcall.replay(answers, rule, capacity=4, chunk=5, device="gpu")
        assert_same_outcome(gpu, cpu, REPLAY_KEYS)
    assert gpu["consensus"][0] == 7


@pytest.mark.parametrize("spec", ["fixed", "consol-sprt", "beta", "esc:4", "majority:0.7"])
@pytest.mark.parametrize("allocation,chunk", [("chunk", 1), ("chunk", 3), ("fewest", 2)])
def test_gpu_scheduler_matches_its_twin(spec, allocation, chunk):
    """rollcall's own GPU Scheduler and CPU round loop, and replay on the GPU."""
    answers = answers_like(45, 24, seed=len(spec) * 7 + chunk, pad=0.0)
    answers[1] = 4
    rule = rollcall.Rule.from_spec(spec, min_votes=2, max_votes=24)
    kw = dict(allocation=allocation, chunk=chunk)
    twin = rollcall._rollcall._twin_replay(answers, rule, **kw)
    gpu = rollcall._rollcall._twin_replay(answers, rule, device="gpu", **kw)
    flips = 0.01 if spec == "beta" else 0.0
    assert_same_outcome(gpu, twin, ["consensus", "votes", "stopped_in_round"], flips)
    if flips == 0:
        np.testing.assert_array_equal(gpu["rewards"], twin["rewards"])
        np.testing.assert_allclose(gpu["advantages"], twin["advantages"], rtol=1e-4,
                                   atol=1e-4)
        replayed = rollcall.replay(answers, rule, device="gpu", **kw)
        for key in ["consensus", "votes", "stopped_in_round"]:
            np.testing.assert_array_equal(replayed[key], twin[key], err_msg=key)
        assert replayed["rounds"] == twin["rounds"]


@pytest.mark.parametrize("spec", ["consol-sprt", "majority:0.6", "fixed", "calibrated:0.05"])
@pytest.mark.parametrize("allocation", ["chunk", "fewest"])
def test_voter_gpu_matches_cpu(spec, allocation):
    answers = answers_like(37, 30, seed=9, pad=0.0)
    answers[1] = 4              # no padding: every request can be met
    rule = rollcall.Rule.from_spec(spec, max_votes=30)
    voters = [rollcall.Voter(37, rule, allocation=allocation, chunk=3, capacity=5,
                             device=d) for d in ["cpu", "gpu"]]
    assert [v.device for v in voters] == ["cpu", "gpu"]
    taken = np.zeros(37, dtype=np.int64)
    need, counts = voters[0].request()
    while need.any():
        width = int(counts.max())
        round_ = np.full((37, width), -1, dtype=np.int64)
        for p in np.flatnonzero(need):
            round_[p, :counts[p]] = answers[p, taken[p]:taken[p] + counts[p]]
            taken[p] += counts[p]
        need, counts = voters[0].feed(round_)
        gpu_need, gpu_counts = voters[1].feed(round_)
        np.testing.assert_array_equal(gpu_need, need)
        np.testing.assert_array_equal(gpu_counts, counts)
    cpu, gpu = voters
    assert gpu.done and gpu.rounds == cpu.rounds
    for attr in ["consensus", "votes", "stopped_in_round", "live", "requests"]:
        np.testing.assert_array_equal(getattr(gpu, attr), getattr(cpu, attr), err_msg=attr)
    np.testing.assert_allclose(gpu.confidence, cpu.confidence, rtol=0, atol=1e-4)
    for p in [0, 5, 36]:
        for g, c in zip(gpu.table(p), cpu.table(p)):
            np.testing.assert_array_equal(g, c)
    with pytest.raises(rollcall.ShapeError):
        gpu.table(37)


def test_voter_gpu_subset_feeding():
    rule = rollcall.Rule("majority", share=0.6, max_votes=10)
    voters = [rollcall.Voter(3, rule, device=d) for d in ["cpu", "gpu"]]
    for v in voters:
        v.feed(np.array([[4, 4, 4, 4]]), prompts=np.array([2]))
        v.feed(np.array([[1, 1, 2], [5, -1, -1]]), prompts=[0, 1])
    cpu, gpu = voters
    for attr in ["consensus", "votes", "live", "requests", "stopped_in_round"]:
        np.testing.assert_array_equal(getattr(gpu, attr), getattr(cpu, attr), err_msg=attr)
    assert "device=\"gpu\"" in repr(gpu) and "device" not in repr(cpu)


@pytest.mark.parametrize("shape", SHAPES + [(200, 16), (10, 300)])
def test_majority_rewards_gpu_matches_cpu(shape):
    answers = answers_like(*shape, seed=shape[0] + 3 * shape[1], alphabet=4)
    rewards, consensus = rollcall.majority_rewards(answers)
    g_rewards, g_consensus = rollcall.majority_rewards(answers, device="gpu")
    assert g_rewards.dtype == np.float32 and g_consensus.dtype == np.int64
    assert g_rewards.shape == rewards.shape and g_consensus.shape == consensus.shape
    np.testing.assert_array_equal(g_consensus, consensus)
    np.testing.assert_array_equal(g_rewards, rewards)

    given = np.full(shape[0], 2)
    given[::4] = -1
    np.testing.assert_array_equal(
        rollcall.majority_rewards(answers, given, device="gpu")[0],
        rollcall.majority_rewards(answers, given)[0])


def test_majority_rewards_gpu_ties_go_to_the_first_seen():
    answers = np.array([[3, 1, 1, 3], [-1, 8, 9, -1], [5, -1, -1, -1]])
    rewards, consensus = rollcall.majority_rewards(answers, device="gpu")
    assert consensus.tolist() == [3, 8, 5]
    assert rewards.tolist() == [[1, 0, 0, 1], [0, 1, 0, 0], [1, 0, 0, 0]]


ESTIMATORS = [
    ("max@k", dict(n=1)), ("max@k", dict(n=8)), ("pass@k", dict(k=4)),
    ("tea", dict(n=128)), ("prefix-tea", dict(n=64, prefixes=3)),
    ("gpd", dict(n=128, alpha=0.25)), ("grpo", dict(eps=1e-4)),
]


def rewards_like(rows, cols, seed, kind):
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return rng.normal(size=(rows, cols)).astype(np.float32)
    if kind == "ties":
        return rng.integers(0, 3, size=(rows, cols)).astype(np.float32) / 2
    return (rng.random((rows, cols)) < 0.3).astype(np.float32)


def assert_estimates_close(gpu, cpu, rewards, lengths, gpd):
    assert set(gpu) == set(cpu)
    assert gpu["status"] == cpu["status"]
    for key in ["values", "advantages"]:
        assert gpu[key].dtype == cpu[key].dtype == np.float32
        assert gpu[key].shape == cpu[key].shape
    for r in range(rewards.shape[0]):
        m = lengths[r]
        parts = [rewards[r, :m], cpu["advantages"][r, :m], cpu["values"][r:r + 1]]
        finite = np.concatenate(parts)
        finite = finite[np.isfinite(finite)]
        scale = max(1.0, float(np.abs(finite).max(initial=0.0)))
        g, c = gpu["values"][r], cpu["values"][r]
        assert (np.isnan(g) and np.isnan(c)) or abs(g - c) <= 1e-4 * scale, (r, g, c)
        tol = (1e-4 + (1e-3 if gpd else 0.0)) * scale
        np.testing.assert_allclose(gpu["advantages"][r], cpu["advantages"][r],
                                   rtol=0, atol=tol, err_msg=f"row {r}")


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (1, 1), (5, 1), (40, 37), (17, 130)])
@pytest.mark.parametrize("kind", ["gaussian", "ties", "binary"])
@pytest.mark.parametrize("name,params", ESTIMATORS)
def test_estimate_gpu_matches_cpu(shape, kind, name, params):
    seed = shape[0] * 7 + shape[1] + len(name)
    rewards = rewards_like(*shape, seed=seed, kind=kind)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, shape[1] + 1, size=shape[0])
    if shape[0] > 2:
        lengths[0], lengths[1] = 0, shape[1]     # an empty row and a full one
    for lens in [None, lengths]:
        cpu = rollcall.estimate(rewards, name, lengths=lens, **params)
        gpu = rollcall.estimate(rewards, name, lengths=lens, device="gpu", **params)
        full = np.full(shape[0], shape[1]) if lens is None else lens
        assert_estimates_close(gpu, cpu, rewards, full, gpd=name == "gpd")


def test_estimate_shorthands_take_the_device():
    rewards = rewards_like(20, 70, seed=4, kind="gaussian")
    np.testing.assert_allclose(rollcall.max_at_k(rewards, 4, device="gpu"),
                               rollcall.max_at_k(rewards, 4), rtol=0, atol=1e-4 * 4)
    np.testing.assert_allclose(rollcall.pkpo_weights(rewards, 4, device="gpu"),
                               rollcall.pkpo_weights(rewards, 4), rtol=0, atol=1e-4 * 4)
    for call in [lambda d: rollcall.tea(rewards, 64, device=d),
                 lambda d: rollcall.prefix_tea(rewards, 64, device=d)]:
        gpu, cpu = call("gpu"), call("cpu")
        assert gpu["status"] == cpu["status"]
        np.testing.assert_allclose(gpu["values"], cpu["values"], rtol=0, atol=1e-3)


@pytest.mark.parametrize("shape", [(0, 3), (2, 0), (1, 1), (9, 65), (4, 300)])
def test_order_and_top_k_gpu_equal_cpu(shape):
    rewards = rewards_like(*shape, seed=shape[0] + shape[1], kind="ties")
    lengths = np.random.default_rng(1).integers(0, shape[1] + 1, size=shape[0])
    for lens in [None, lengths]:
        for g, c in zip(rollcall.order(rewards, lengths=lens, device="gpu"),
                        rollcall.order(rewards, lengths=lens)):
            assert g.dtype == c.dtype
            np.testing.assert_array_equal(g, c)
        for k in [1, 3, 70]:
            for g, c in zip(rollcall.top_k(rewards, k, lengths=lens, device="gpu"),
                            rollcall.top_k(rewards, k, lengths=lens)):
                assert g.dtype == c.dtype
                np.testing.assert_array_equal(g, c)


def test_calibrated_runs_on_the_gpu():
    # The calibrated rule refits its batch prior on the GPU: the same
    # stops as the CPU's f64 twin unless a risk falls within 2e-4 of delta.
    answers = answers_like(200, 40, seed=1)
    for delta in (0.01, 0.05):
        rule = rollcall.Rule("calibrated", delta=delta, max_votes=40)
        gpu = rollcall.replay(answers, rule, device="gpu")
        cpu = rollcall.replay(answers, rule)
        assert set(gpu) == set(cpu)
        same = (gpu["votes"] == cpu["votes"]) & (gpu["consensus"] == cpu["consensus"])
        assert same.mean() >= 0.99, same.mean()
        assert gpu["votes"].mean() < 40
        np.testing.assert_allclose(gpu["confidence"][same], cpu["confidence"][same], atol=2e-4)
    voter = rollcall.Voter(10, rollcall.Rule("calibrated", delta=0.05, max_votes=8), device="gpu")
    assert voter.device == "gpu"


def test_gpu_errors_are_typed():
    answers = answers_like(10, 8, seed=1)
    with pytest.raises(rollcall.NonFiniteError):
        rollcall.estimate([[1.0, np.nan]], "tea", n=4, device="gpu")
    with pytest.raises(rollcall.ShapeError):
        rollcall.estimate(np.zeros((1, 20000)), "max@k", n=2, device="gpu")
    with pytest.raises(rollcall.InvalidValueError):
        rollcall.replay(answers, "beta", capacity=0, device="gpu")
    with pytest.raises(rollcall.ShapeError):
        rollcall.Voter(3, "beta", device="gpu").table(3)


def test_random_inputs_never_crash_on_the_gpu():
    rng = np.random.default_rng(12)
    calls = [
        lambda x: rollcall.majority_rewards(x, device="gpu"),
        lambda x: rollcall.replay(x, "beta", device="gpu"),
        lambda x: rollcall.estimate(x, "tea", n=4, device="gpu"),
        lambda x: rollcall.estimate(x, "gpd", n=4, device="gpu"),
        lambda x: rollcall.top_k(x, 3, device="gpu"),
        lambda x: rollcall.Voter(len(x), "dirichlet", device="gpu").feed(x),
    ]
    for shape in [(0, 0), (0, 3), (3, 0), (1, 1), (4, 5), (2, 300)]:
        for dtype in [np.int64, np.uint32, np.float32]:
            x = rng.integers(-1, 300, size=shape).astype(dtype)
            for call in calls:
                try:
                    call(x)
                except (rollcall.RollcallError, TypeError, ValueError):
                    pass
