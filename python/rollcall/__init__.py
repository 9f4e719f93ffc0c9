"""rollcall for Python: rollcall's voting and best-of-N kernels for RL loops
(TTRL, GRPO, best-of-N training), numpy in and out. The CPU twins run by
default; ``device="gpu"`` (Voter, replay, majority_rewards, estimate and its
shorthands, order, top_k) runs the GPU kernels on one device per process,
opened on first use (GpuError when no adapter exists).

Voting
    Rule, rules, describe_rules: stopping rules by name with their parameters.
    Voter: incremental voting (feed a round, get the prompts that need more).
    replay: one-shot replay of recorded answers through a rule.
Rewards and advantages
    majority_rewards: TTRL's majority-vote rewards.
    grpo_advantages: GRPO advantages with verl's (or rollcall's) conventions.
Best-of-N tails
    estimate: max@k / PKPO, pass@k, TEA, Prefix-TEA, GPD, GRPO by name.
    max_at_k, pkpo_weights, tea, prefix_tea: shorthands for estimate.
    pass_at_k: pass@k from sample and correct counts.
    order, top_k: segmented sort and top-k.

Answers are integer ids shaped (prompts, votes) with -1 as padding: map
answer strings to ids yourself (answer equivalence is the caller's), for
example with numpy.unique(strings, return_inverse=True).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _errors
from ._errors import *  # noqa: F401,F403  (the classes listed in _errors.__all__)
from ._rollcall import (
    MAX_ANSWER_ID,
    Rule,
    Voter,
    __version__,
    describe_rules,
    estimate,
    grpo_advantages,
    majority_rewards,
    order,
    pass_at_k,
    replay,
    rules,
    top_k,
)


def max_at_k(
    rewards: Any, k: int, *, lengths: Optional[Any] = None, device: str = "cpu"
) -> np.ndarray:
    """Exact expected max of k draws per prompt (unbiased, from m >= k
    rollouts; NaN when a row has fewer): ``estimate(rewards, "max@k", n=k)``'s
    values."""
    return estimate(rewards, "max@k", n=k, lengths=lengths, device=device)["values"]


def pkpo_weights(
    rewards: Any, k: int, *, lengths: Optional[Any] = None, device: str = "cpu"
) -> np.ndarray:
    """PKPO's per-rollout weights for max@k (shaped like ``rewards``; equal
    rewards share credit). Subtract your own baseline before a policy update."""
    return estimate(rewards, "max@k", n=k, lengths=lengths, device=device)["advantages"]


def tea(
    rewards: Any,
    n: int,
    alpha: float = 0.25,
    *,
    lengths: Optional[Any] = None,
    device: str = "cpu",
) -> dict:
    """TEA's Gaussian-tail estimate of best-of-n and its advantages:
    ``estimate(rewards, "tea", n=n, alpha=alpha)``."""
    return estimate(rewards, "tea", n=n, alpha=alpha, lengths=lengths, device=device)


def prefix_tea(
    rewards: Any,
    n: int,
    alpha: float = 0.25,
    prefixes: int = 4,
    *,
    lengths: Optional[Any] = None,
    device: str = "cpu",
) -> dict:
    """Prefix-TEA (TEA on sampling-order prefixes, combined to cancel the 1/m
    bias): ``estimate(rewards, "prefix-tea", n=n, alpha=alpha, prefixes=prefixes)``."""
    return estimate(
        rewards,
        "prefix-tea",
        n=n,
        alpha=alpha,
        prefixes=prefixes,
        lengths=lengths,
        device=device,
    )


__all__ = [
    "__version__",
    "MAX_ANSWER_ID",
    "Rule",
    "rules",
    "describe_rules",
    "Voter",
    "replay",
    "majority_rewards",
    "grpo_advantages",
    "estimate",
    "max_at_k",
    "pkpo_weights",
    "tea",
    "prefix_tea",
    "pass_at_k",
    "order",
    "top_k",
    *_errors.__all__,
]
