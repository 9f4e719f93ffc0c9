"""rollcall in a TTRL-style loop and as verl's GRPO advantage estimator.

Runs without verl or torch: a stub "model" samples answers, the voter asks
for rollouts round by round until each prompt's consensus is confident,
then the majority answers become TTRL rewards and GRPO advantages. With verl
installed, the same advantage function is registered through
``register_adv_est`` (verl's registry of advantage estimators).

    python examples/verl_ttrl.py
"""

from __future__ import annotations

import numpy as np

import rollcall

try:  # verl, when installed; otherwise a stand-in with the same shape.
    from verl.trainer.ppo.core_algos import register_adv_est
except ImportError:
    ADV_ESTIMATORS = {}

    def register_adv_est(name):
        def wrap(fn):
            ADV_ESTIMATORS[name] = fn
            return fn

        return wrap


def _to_numpy(x):
    """A torch tensor or array-like as a numpy array (no torch import)."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _like(result, template):
    """``result`` as a tensor when ``template`` is one (torch is then installed)."""
    if hasattr(template, "detach"):
        import torch

        return torch.from_numpy(result).to(template.device)
    return result


@register_adv_est("rollcall_grpo")
def compute_grpo_outcome_advantage(
    token_level_rewards,
    response_mask,
    index,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
    config=None,
    **kwargs,
):
    """verl's GRPO outcome advantage, computed by rollcall.

    token_level_rewards, response_mask: (batch, response_length);
    index: (batch,) group ids (verl's uid strings). Returns (advantages,
    returns), both (batch, response_length), as verl's estimator does.
    """
    rewards = _to_numpy(token_level_rewards).astype(np.float32)
    mask = _to_numpy(response_mask).astype(np.float32)
    scores = rewards.sum(axis=-1)
    adv = rollcall.grpo_advantages(
        scores,
        np.asarray(index),
        epsilon=epsilon,
        norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
    )
    out = _like(adv[:, None] * mask, token_level_rewards)
    return out, out


class StubModel:
    """Stands in for the policy: each prompt has a favourite answer that it
    gives with a prompt-specific probability, else a random wrong one."""

    def __init__(self, prompts: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.p_right = self.rng.uniform(0.2, 0.95, size=prompts)

    def generate(self, prompt_ids: np.ndarray, counts: np.ndarray) -> list[list[str]]:
        out = []
        for p, c in zip(prompt_ids, counts):
            right = self.rng.random(c) < self.p_right[p]
            wrong = self.rng.integers(1, 6, size=c)
            out.append([f"{p}:42" if r else f"{p}:{w}" for r, w in zip(right, wrong)])
        return out


def ttrl_step(prompts: int = 8, max_rollouts: int = 32, seed: int = 0):
    model = StubModel(prompts, seed)
    rule = rollcall.Rule("beta", threshold=0.95, max_votes=max_rollouts)
    voter = rollcall.Voter(prompts, rule, allocation="fewest", chunk=4)
    ids: dict[str, int] = {}  # answer string -> id (equivalence is ours)
    history: list[list[int]] = [[] for _ in range(prompts)]
    need, counts = voter.request()
    while need.any():
        live = np.flatnonzero(need)
        texts = model.generate(live, counts[live])
        width = int(counts[live].max())
        round_ = np.full((len(live), width), -1, dtype=np.int64)
        for row, (p, answers) in enumerate(zip(live, texts)):
            round_[row, : len(answers)] = [ids.setdefault(a, len(ids)) for a in answers]
            history[p].extend(round_[row, : len(answers)])
        need, counts = voter.feed(round_, prompts=live)
        print(f"round {voter.rounds}: fed {len(live)} prompts, {int(need.sum())} still live")

    # The rollouts actually generated, padded: TTRL rewards and GRPO advantages.
    width = max(len(h) for h in history)
    answers = np.full((prompts, width), -1, dtype=np.int64)
    for p, h in enumerate(history):
        answers[p, : len(h)] = h
    rewards, consensus = rollcall.majority_rewards(answers, voter.consensus)
    valid = answers >= 0
    scores = rewards[valid]
    index = np.repeat(np.arange(prompts), valid.sum(axis=1))
    response_length = 16
    token_rewards = np.zeros((len(scores), response_length), dtype=np.float32)
    token_rewards[:, -1] = scores  # an outcome reward on the last token
    mask = np.ones_like(token_rewards)
    adv, returns = compute_grpo_outcome_advantage(token_rewards, mask, index)

    print("votes per prompt:", voter.votes.tolist(), f"(budget {max_rollouts} each)")
    print("confidence:", np.round(voter.confidence, 3).tolist())
    print("rewards:", rewards.shape, "advantages:", adv.shape, "returns:", returns.shape)
    return voter, adv


if __name__ == "__main__":
    ttrl_step()
