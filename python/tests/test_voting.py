"""Voting: the Voter and replay against rollcall's own round loop, and TTRL
rewards against a Counter reference."""

from collections import Counter
import pathlib
import re

import numpy as np
import pytest

import rollcall


def test_version_matches_the_crate():
    cargo = pathlib.Path(__file__).resolve().parents[2] / "Cargo.toml"
    text = cargo.read_text()
    section = text.split("[workspace.package]", 1)[1]
    version = re.search(r'^version\s*=\s*"([^"]+)"', section, re.M).group(1)
    assert rollcall.__version__ == version


def synthetic(prompts, votes, seed):
    """Answers shaped like the shared vote data: mostly decisive prompts."""
    rng = np.random.default_rng(seed)
    out = np.empty((prompts, votes), dtype=np.int64)
    for p in range(prompts):
        share = rng.choice([0.95, 0.6, 0.35])
        wrong = rng.integers(1, 6, size=votes)
        out[p] = np.where(rng.random(votes) < share, 0, wrong) + 10 * p
    return out


def test_rules_by_name():
    names = rollcall.rules()
    for name in ["fixed", "beta", "dirichlet", "optpo", "consol-sprt",
                 "consol-msprt", "esc", "majority", "entropy", "predictive", "margin",
                 "calibrated"]:
        assert name in names
        rule = rollcall.Rule(name, max_votes=32)
        assert rule.name == name and rule.max_votes == 32
    assert rollcall.Rule("ac-beta").name == "beta"
    r = rollcall.Rule("beta", threshold=0.9, prior=0.5, min_votes=2)
    assert r.params == {"threshold": 0.9, "prior": 0.5} and r.min_votes == 2
    assert rollcall.Rule.from_spec("beta:0.9:0.5", min_votes=2) == r
    assert rollcall.Rule("dirichlet", top=3).params["top"] == 3
    assert any(name == "calibrated" for name, _ in rollcall.describe_rules())


def test_calibrated_rule_checks_its_settings():
    assert rollcall.Rule("calibrated", delta=0.02).params == {"delta": pytest.approx(0.02)}
    for bad in [dict(delta=1.5), dict(delta=-0.1), dict(delta=0.01, max_votes=65)]:
        with pytest.raises(rollcall.InvalidRuleError):
            rollcall.Rule("calibrated", **bad)


def test_calibrated_voter_stops_early_on_a_decisive_batch():
    answers = synthetic(300, 40, seed=3)
    got = rollcall.replay(answers, rollcall.Rule("calibrated", delta=0.02, min_votes=2,
                                                  max_votes=40), chunk=1)
    assert got["votes"].mean() < 20

    def first_seen_majority(row):
        counts = Counter(row.tolist())
        top = max(counts.values())
        return next(a for a in row.tolist() if counts[a] == top)

    flips = sum(first_seen_majority(row) != c for row, c in zip(answers, got["consensus"]))
    assert flips / len(answers) <= 0.02


@pytest.mark.parametrize("spec", ["fixed", "beta", "dirichlet:0.9:3", "optpo",
                                  "consol-sprt", "consol-msprt", "esc:4",
                                  "majority:0.7", "entropy:0.6", "predictive:0.5:0.02",
                                  "margin:2", "calibrated:0.02"])
@pytest.mark.parametrize("allocation,chunk", [("chunk", 1), ("chunk", 3), ("fewest", 2)])
def test_replay_and_voter_match_rollcalls_round_loop(spec, allocation, chunk):
    answers = synthetic(40, 24, seed=len(spec) + chunk)
    rule = rollcall.Rule.from_spec(spec, min_votes=2, max_votes=24)
    twin = rollcall._rollcall._twin_replay(answers, rule, allocation=allocation, chunk=chunk)
    got = rollcall.replay(answers, rule, allocation=allocation, chunk=chunk)
    for key in ["consensus", "confidence", "votes", "stopped_in_round"]:
        np.testing.assert_array_equal(got[key], twin[key], err_msg=key)
    assert got["rounds"] == twin["rounds"]
    assert not got["exhausted"].any()
    np.testing.assert_array_equal(got["used"].sum(axis=1), got["votes"])

    # The same rounds fed by hand through the incremental voter.
    voter = rollcall.Voter(len(answers), rule, allocation=allocation, chunk=chunk)
    taken = np.zeros(len(answers), dtype=np.int64)
    need, counts = voter.request()
    while need.any():
        width = int(counts.max())
        round_ = np.full((len(answers), width), -1, dtype=np.int64)
        for p in np.flatnonzero(need):
            c = counts[p]
            round_[p, :c] = answers[p, taken[p]:taken[p] + c]
            taken[p] += c
        need, counts = voter.feed(round_)
        assert (counts[~need] == 0).all() and (counts[need] >= 1).all()
    assert voter.done and voter.rounds == twin["rounds"]
    np.testing.assert_array_equal(voter.consensus, twin["consensus"])
    np.testing.assert_array_equal(voter.confidence, twin["confidence"])
    np.testing.assert_array_equal(voter.votes, twin["votes"])
    np.testing.assert_array_equal(voter.stopped_in_round, twin["stopped_in_round"])

    # The twin's TTRL rewards and GRPO advantages over the revealed answers.
    revealed = np.where(got["used"], answers, -1)
    rewards, consensus = rollcall.majority_rewards(revealed)
    np.testing.assert_array_equal(consensus, twin["consensus"])
    flat = np.concatenate([rewards[p][got["used"][p]] for p in range(len(answers))])
    np.testing.assert_array_equal(flat, twin["rewards"])
    adv = rollcall.grpo_advantages(flat, np.repeat(np.arange(len(answers)), got["votes"]),
                                   epsilon=1e-4, convention="rollcall")
    np.testing.assert_array_equal(adv, twin["advantages"])


def test_voter_stops_decisive_prompts_early():
    answers = np.array([[7] * 8, [1, 2, 3, 4, 5, 6, 7, 8]])
    voter = rollcall.Voter(2, rollcall.Rule("consol-sprt", max_votes=8), chunk=1)
    for col in range(8):
        if voter.done:
            break
        voter.feed(np.where(voter.live[:, None], answers[:, col:col + 1], -1))
    assert voter.votes.tolist() == [3, 8]   # a lead of 3 stops prompt 0
    assert voter.stopped_in_round.tolist() == [3, 8]
    assert voter.consensus.tolist() == [7, 1]  # ties go to the first seen
    ids, counts = voter.table(1)
    assert ids.tolist() == list(range(1, 9)) and counts.tolist() == [1] * 8


def test_voter_subset_feeding_and_errors():
    voter = rollcall.Voter(3, rollcall.Rule("majority", share=0.6, max_votes=10))
    need, counts = voter.feed(np.array([[4, 4, 4, 4]]), prompts=np.array([2]))
    assert need.tolist() == [True, True, False] and counts.tolist() == [4, 4, 0]
    assert voter.consensus.tolist() == [-1, -1, 4]
    with pytest.raises(rollcall.InvalidValueError, match="prompt 2 stopped"):
        voter.feed(np.array([[1]]), prompts=[2])
    with pytest.raises(rollcall.ShapeError):
        voter.feed(np.array([[1, 2]]))          # 1 row for 3 prompts
    with pytest.raises(rollcall.InvalidValueError):
        voter.feed(np.array([[1], [1]]), prompts=[0, 0])
    with pytest.raises(rollcall.InvalidValueError):
        voter.feed(np.array([[1]]), prompts=[5])


def test_replay_marks_exhausted_prompts():
    answers = np.array([[1, 2, -1, -1], [3, 3, 3, 3], [-1, -1, -1, -1]])
    out = rollcall.replay(answers, rollcall.Rule("fixed", max_votes=4), chunk=1)
    assert out["exhausted"].tolist() == [True, False, True]
    assert out["votes"].tolist() == [2, 4, 0]
    assert out["consensus"].tolist() == [1, 3, -1]


def counter_majority(answers):
    """TTRL's majority with a Counter (the reference)."""
    consensus, rewards = [], np.zeros(answers.shape, dtype=np.float32)
    for p, row in enumerate(answers):
        row = [a for a in row.tolist() if a != -1]
        if not row:
            consensus.append(-1)
            continue
        top = Counter(row).most_common(1)[0][0]
        consensus.append(top)
        rewards[p] = [1.0 if a == top else 0.0 for a in answers[p].tolist()]
        rewards[p][answers[p] == -1] = 0.0
    return rewards, np.array(consensus)


def test_majority_rewards_match_counter():
    rng = np.random.default_rng(3)
    answers = rng.integers(0, 5, size=(200, 16))
    answers[rng.random(answers.shape) < 0.2] = -1
    answers[5] = -1
    rewards, consensus = rollcall.majority_rewards(answers)
    ref_rewards, ref_consensus = counter_majority(answers)
    np.testing.assert_array_equal(consensus, ref_consensus)
    np.testing.assert_array_equal(rewards, ref_rewards)
    assert rewards.dtype == np.float32 and consensus.dtype == np.int64

    given = np.full(200, 2)
    given[0] = -1
    rewards, _ = rollcall.majority_rewards(answers, consensus=given)
    np.testing.assert_array_equal(rewards[1:], (answers[1:] == 2).astype(np.float32))
    assert not rewards[0].any()


def test_strings_mapped_to_ids():
    strings = np.array([["4", "4", "5"], ["x", "y", "y"]])
    _, ids = np.unique(strings, return_inverse=True)
    rewards, consensus = rollcall.majority_rewards(ids.reshape(strings.shape))
    assert rewards.tolist() == [[1, 1, 0], [0, 1, 1]]
    with pytest.raises(rollcall.DTypeError, match="integer answer ids"):
        rollcall.majority_rewards(strings)
