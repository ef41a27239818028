"""Learning check: SACAgent from state solves gymnasium Pendulum-v1 (return > -300) in 15k steps.

    .venv/bin/python bench/learn_pendulum.py               # seed 0, 15k env steps, ~3-6 min on CPU
    .venv/bin/python bench/learn_pendulum.py --seed 1 --steps 10000

The agent is sized from a hand-built FeatureSpec (observation.state (3,), action (1,),
continuous_action_dim=1, no gripper) and uses the project's PolicyConfig defaults except
discount 0.99 (Pendulum's swing-up needs the longer horizon). A tiny numpy ring buffer stands in
for the real replay buffer and emits the same Batch format. Pendulum never terminates; its
200-step time limit is a truncation, which bootstraps from the true final observation.
Exits 1 if the final evaluation is not above -300.
"""

from __future__ import annotations

import argparse
import sys
import time

import gymnasium as gym
import numpy as np
import torch

from hilserl_ray.config import PolicyConfig
from hilserl_ray.features import ACTION, STATE, Feature, FeatureSpec
from hilserl_ray.policy import SACAgent

SOLVED = -300.0


class RingBuffer:
    """Transitions with their own next observation, sampled uniformly into the Batch format."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, act_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.rng = np.random.default_rng(seed)

    def add(self, obs, action, reward, terminated, next_obs) -> None:
        i = self.pos
        self.obs[i], self.action[i], self.reward[i] = obs, action, reward
        self.terminated[i], self.next_obs[i] = float(terminated), next_obs
        self.pos, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, b: int) -> dict:
        idx = self.rng.integers(0, self.size, b)
        t = torch.from_numpy
        return {
            "observation": {STATE: t(self.obs[idx])},
            "next_observation": {STATE: t(self.next_obs[idx])},
            "action": t(self.action[idx]),
            "reward": t(self.reward[idx]),
            "terminated": t(self.terminated[idx]),
            "discrete_penalty": torch.zeros(b),
            "is_intervention": torch.zeros(b),
        }


def pendulum_spec() -> FeatureSpec:
    return FeatureSpec(
        observation={STATE: Feature(STATE, (3,), "float32", "gymnasium", ("cos", "sin", "thetadot"))},
        action=Feature(ACTION, (1,), "float32", "gymnasium", ("torque",)),
        continuous_action_dim=1,
        discrete_gripper=False,
    )


def evaluate(agent: SACAgent, seed: int, episodes: int) -> float:
    env = gym.make("Pendulum-v1")
    total = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed * 100 + ep)
        done = False
        while not done:
            a = agent.select_action({STATE: obs.astype(np.float32)}, deterministic=True)
            obs, r, term, trunc, _ = env.step(2.0 * a)
            total += float(r)
            done = term or trunc
    return total / episodes


def run(
    steps: int = 15_000, seed: int = 0, start_steps: int = 1_000, eval_every: int = 2_500, log=print
) -> dict:
    torch.manual_seed(seed)
    env = gym.make("Pendulum-v1")
    spec = pendulum_spec()
    cfg = PolicyConfig(device="cpu", discount=0.99)
    # normalization from the env's observation space (what a dataset's stats would give)
    space = env.observation_space
    stats = {STATE: {"min": space.low.tolist(), "max": space.high.tolist()}}
    agent = SACAgent(spec, cfg, stats)
    buf = RingBuffer(steps, 3, 1, seed)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    history, t0 = [], time.perf_counter()
    for step in range(1, steps + 1):
        if step <= start_steps:
            action = rng.uniform(-1, 1, 1).astype(np.float32)
        else:
            action = agent.select_action({STATE: obs.astype(np.float32)})
        next_obs, reward, terminated, truncated, _ = env.step(2.0 * action)
        buf.add(obs, action, reward, terminated, next_obs)  # truncation: next_obs is the true final obs
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
        if step >= start_steps:
            agent.update([buf.sample(cfg.batch_size) for _ in range(cfg.utd_ratio)])
        if step % eval_every == 0 or step == steps:
            ret = evaluate(agent, seed, 5)
            history.append((step, ret))
            log(
                f"step {step:>6}  eval return {ret:8.1f}  temperature {agent.temperature.item():.4f}  "
                f"{time.perf_counter() - t0:5.0f} s"
            )
    final = history[-1][1]
    first = next((s for s, r in history if r > SOLVED), None)
    return {
        "final_return": final,
        "first_solved_step": first,
        "history": history,
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=15_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="small networks: 1 thread avoids OpenMP overhead")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    r = run(args.steps, args.seed)
    ok = r["final_return"] > SOLVED
    print(
        f"Pendulum-v1 seed {args.seed}: final eval return {r['final_return']:.1f} (solved > {SOLVED}); "
        f"first above at step {r['first_solved_step']}; {r['seconds']:.0f} s -> {'PASS' if ok else 'FAIL'}"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
