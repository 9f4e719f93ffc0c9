"""Bad shapes, dtypes and values raise typed errors; nothing crashes."""

import numpy as np
import pytest

import rollcall


def test_error_hierarchy():
    assert issubclass(rollcall.ShapeError, ValueError)
    assert issubclass(rollcall.DTypeError, TypeError)
    for cls in [rollcall.ShapeError, rollcall.DTypeError, rollcall.InvalidRuleError,
                rollcall.NonFiniteError]:
        assert issubclass(cls, rollcall.RollcallError)


@pytest.mark.parametrize("answers,error", [
    ([1, 2, 3], rollcall.ShapeError),                  # 1-D
    (np.zeros((2, 2, 2), dtype=int), rollcall.ShapeError),
    ([[1, 2], [3]], rollcall.ShapeError),              # ragged
    ([[1.5, 2.0]], rollcall.DTypeError),               # floats
    ([[True, False]], rollcall.DTypeError),
    ([["a", "b"]], rollcall.DTypeError),
    ([[-2, 1]], rollcall.InvalidValueError),           # only -1 pads
    (np.array([[2**32 - 1]], dtype=np.uint64), rollcall.InvalidValueError),
    (np.array([[2**64 - 1]], dtype=np.uint64), rollcall.InvalidValueError),
    (object(), rollcall.DTypeError),
])
def test_bad_answers(answers, error):
    with pytest.raises(error):
        rollcall.majority_rewards(answers)
    with pytest.raises(error):
        rollcall.replay(answers, "beta")


def test_bad_rules_and_arguments():
    with pytest.raises(rollcall.InvalidRuleError, match="known rules"):
        rollcall.Rule("nope")
    with pytest.raises(rollcall.InvalidRuleError, match="no parameter"):
        rollcall.Rule("beta", window=3)
    with pytest.raises(rollcall.InvalidRuleError):
        rollcall.Rule("beta", threshold=2.0)
    with pytest.raises(rollcall.InvalidRuleError):
        rollcall.Rule("beta", threshold=float("nan"))
    with pytest.raises(rollcall.InvalidRuleError):
        rollcall.Rule("esc", window=2.5)
    with pytest.raises(rollcall.InvalidRuleError):
        rollcall.Rule("beta", min_votes=5, max_votes=4)
    with pytest.raises(rollcall.InvalidRuleError):
        rollcall.Rule("beta", max_votes=0)
    with pytest.raises(rollcall.DTypeError):
        rollcall.Rule("beta", threshold="high")
    with pytest.raises(rollcall.InvalidRuleError):
        rollcall.Rule.from_spec("beta:x")
    with pytest.raises(rollcall.InvalidValueError):
        rollcall.Voter(2, "beta", capacity=0)
    with pytest.raises(rollcall.InvalidValueError):
        rollcall.Voter(2, "beta", chunk=0)
    with pytest.raises(rollcall.InvalidValueError):
        rollcall.Voter(2, "beta", allocation="all")
    with pytest.raises(rollcall.DTypeError):
        rollcall.Voter(2, 3.5)
    with pytest.raises(OverflowError):
        rollcall.Voter(-1, "beta")


def test_bad_rewards():
    with pytest.raises(rollcall.NonFiniteError):
        rollcall.max_at_k([[1.0, np.nan]], 1)
    with pytest.raises(rollcall.NonFiniteError):
        rollcall.max_at_k([[1.0, np.inf]], 1)
    with pytest.raises(rollcall.ShapeError):
        rollcall.max_at_k([1.0, 2.0], 1)
    with pytest.raises(rollcall.DTypeError):
        rollcall.max_at_k([[1 + 2j]], 1)
    with pytest.raises(rollcall.ShapeError):
        rollcall.estimate(np.zeros((1, 20000)), "max@k", n=2)   # past a segment's limit
    with pytest.raises(rollcall.InvalidValueError):
        rollcall.top_k([[1.0]], 0)


def test_random_inputs_never_crash():
    rng = np.random.default_rng(11)
    calls = [
        lambda x: rollcall.majority_rewards(x),
        lambda x: rollcall.replay(x, "beta"),
        lambda x: rollcall.grpo_advantages(x),
        lambda x: rollcall.estimate(x, "tea", n=4),
        lambda x: rollcall.estimate(x, "prefix-tea", n=4),
        lambda x: rollcall.estimate(x, "gpd", n=4),
        lambda x: rollcall.top_k(x, 3),
        lambda x: rollcall.Voter(len(x), "dirichlet").feed(x),
    ]
    shapes = [(0, 0), (0, 3), (3, 0), (1, 1), (4, 5), (2, 300)]
    for shape in shapes:
        for dtype in [np.int64, np.int8, np.uint32, np.float32, np.float64]:
            x = rng.integers(-1, 300, size=shape).astype(dtype)
            for call in calls:
                try:
                    call(x)
                except (rollcall.RollcallError, TypeError, ValueError):
                    pass


@pytest.mark.parametrize("bad", ["GPU", "cuda", "", "cpu "])
def test_bad_device_names_the_allowed_values(bad):
    answers = [[1, 2]]
    calls = [
        lambda: rollcall.replay(answers, "beta", device=bad),
        lambda: rollcall._rollcall._twin_replay(answers, "beta", device=bad),
        lambda: rollcall.majority_rewards(answers, device=bad),
        lambda: rollcall.estimate([[1.0]], "grpo", device=bad),
        lambda: rollcall.max_at_k([[1.0]], 1, device=bad),
        lambda: rollcall.order([[1.0]], device=bad),
        lambda: rollcall.top_k([[1.0]], 1, device=bad),
        lambda: rollcall.Voter(1, "beta", device=bad),
    ]
    for call in calls:
        with pytest.raises(rollcall.InvalidValueError, match='"cpu" or "gpu"'):
            call()
