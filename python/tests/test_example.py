"""The verl/TTRL example runs without verl and gives verl's shapes."""

import pathlib
import runpy

import numpy as np


def test_verl_ttrl_example_runs():
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "verl_ttrl.py"
    example = runpy.run_path(str(path))
    voter, adv = example["ttrl_step"](prompts=6, max_rollouts=16, seed=1)
    assert voter.done and adv.shape == (int(voter.votes.sum()), 16)
    # The registered estimator on verl's inputs: uid strings, token rewards.
    fn = example["compute_grpo_outcome_advantage"]
    rewards = np.zeros((4, 3), dtype=np.float32)
    rewards[:, -1] = [1, 0, 1, 1]
    adv, ret = fn(rewards, np.ones_like(rewards), np.array(["a", "a", "b", "b"]))
    assert adv.shape == (4, 3) and (adv == ret).all()
    assert adv[0, -1] > 0 > adv[1, -1] and (adv[2:] == 0).all()
