"""Benchmark (not a test): rollcall's voter and GRPO advantages against the
pure-Python code RL frameworks use today, on 1024 prompts x 64 rollouts.

Baselines, written out here in the frameworks' style:
- majority vote: a ``collections.Counter`` per prompt, ``most_common(1)``,
  then a 0/1 reward per rollout (TTRL's batch majority vote);
- GRPO: scores grouped by index in dicts, per-group mean and unbiased std,
  then a loop normalising each score (verl's outcome advantage), in numpy.

    python bench/bench_voting.py [--prompts 1024] [--rollouts 64] [--repeats 5]

Prints the best time of each and the ratio baseline / rollcall.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import Counter, defaultdict

import numpy as np

import rollcall


def counter_majority(answers: np.ndarray):
    rewards = np.zeros(answers.shape, dtype=np.float32)
    consensus = []
    for p, row in enumerate(answers.tolist()):
        top = Counter(row).most_common(1)[0][0]
        consensus.append(top)
        rewards[p] = [1.0 if a == top else 0.0 for a in row]
    return rewards, consensus


def dict_loop_grpo(scores: np.ndarray, index: np.ndarray, epsilon: float = 1e-6):
    groups = defaultdict(list)
    for i in range(len(scores)):
        groups[index[i]].append(scores[i])
    mean, std = {}, {}
    for g, values in groups.items():
        if len(values) == 1:
            mean[g], std[g] = 0.0, 1.0
        else:
            stacked = np.stack(values)
            mean[g], std[g] = np.mean(stacked), np.std(stacked, ddof=1)
    out = np.empty_like(scores)
    for i in range(len(scores)):
        out[i] = (scores[i] - mean[index[i]]) / (std[index[i]] + epsilon)
    return out


def best_of(repeats: int, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=1024)
    ap.add_argument("--rollouts", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    P, V = args.prompts, args.rollouts

    rng = np.random.default_rng(0)
    share = rng.uniform(0.2, 0.95, size=(P, 1))
    answers = np.where(rng.random((P, V)) < share, 0, rng.integers(1, 8, size=(P, V)))
    scores = (answers == 0).astype(np.float32) + rng.normal(0, 0.1, (P, V)).astype(np.float32)
    index = np.repeat(np.arange(P), V)
    flat = scores.ravel()

    # Same results first.
    ref_rewards, ref_consensus = counter_majority(answers)
    rewards, consensus = rollcall.majority_rewards(answers)
    assert (rewards == ref_rewards).all() and consensus.tolist() == ref_consensus
    ref_adv = dict_loop_grpo(flat, index)
    adv = rollcall.grpo_advantages(flat, index)
    assert np.allclose(adv, ref_adv, atol=2e-5)

    def voter_fixed():
        voter = rollcall.Voter(P, rollcall.Rule("fixed", max_votes=V), chunk=V)
        voter.feed(answers)
        return rollcall.majority_rewards(answers, voter.consensus)

    def voter_adaptive():
        # The adaptive loop itself (no baseline has one): rounds of 8.
        voter = rollcall.Voter(P, rollcall.Rule("beta", max_votes=V), chunk=8)
        taken = 0
        need, _ = voter.request()
        while need.any() and taken < V:
            voter.feed(np.where(need[:, None], answers[:, taken:taken + 8], -1))
            need, _ = voter.request()
            taken += 8
        return voter

    rows = [
        ("majority vote + rewards", lambda: counter_majority(answers),
         lambda: rollcall.majority_rewards(answers)),
        ("voter (fixed budget) + rewards", lambda: counter_majority(answers), voter_fixed),
        ("GRPO advantages (index array)", lambda: dict_loop_grpo(flat, index),
         lambda: rollcall.grpo_advantages(flat, index)),
        ("GRPO advantages (2-D rows)", lambda: dict_loop_grpo(flat, index),
         lambda: rollcall.grpo_advantages(scores)),
    ]
    print(f"rollcall {rollcall.__version__}, {P} prompts x {V} rollouts, best of {args.repeats}")
    print(f"{platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} logical CPUs")
    print(f"{'':34s} {'baseline':>10s} {'rollcall':>10s} {'ratio':>7s}")
    for name, base, ours in rows:
        b = best_of(args.repeats, base)
        o = best_of(args.repeats, ours)
        print(f"{name:34s} {b * 1e3:8.2f}ms {o * 1e3:8.2f}ms {b / o:6.1f}x")
    a = best_of(args.repeats, voter_adaptive)
    voter = voter_adaptive()
    print(f"{'adaptive voter (beta, rounds of 8)':34s} {'-':>10s} {a * 1e3:8.2f}ms   "
          f"({int(voter.votes.sum())} of {P * V} rollouts used)")


if __name__ == "__main__":
    main()
