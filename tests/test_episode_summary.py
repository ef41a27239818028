"""The training figures over the recent episodes: the policy's own successes apart from those an
intervention finished (no env, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from hilserl_ray.fleet.stats import ArmStats, episode_summary
from hilserl_ray.runtime.metrics import console_line


def episode(success: bool, intervention_steps: int, length: int = 100) -> dict:
    return {
        "success": success,
        "return": float(success),
        "length": length,
        "intervention_steps": intervention_steps,
        "policy_hz": 10.0,
    }


def test_successes_an_intervention_finished_are_not_the_policys_own():
    """A run the oracle rescued: 45 of its last 50 episodes succeeded, 12 of them with no expert step
    (the lerobot_env_so101 run whose deterministic eval placed 4 of 20)."""
    rng = np.random.default_rng(0)
    episodes = (
        [episode(True, 0, 30) for _ in range(12)]
        + [episode(True, int(rng.integers(20, 120))) for _ in range(33)]
        + [episode(False, 120, 300) for _ in range(5)]
    )
    s = episode_summary([episodes[i] for i in rng.permutation(50)])
    assert s["success_rate"] == pytest.approx(0.90)
    assert s["unassisted_success_rate"] == pytest.approx(0.24)
    line = console_line({"env_steps": 20043, "updates": 19491, "episodes": 126, **s})
    assert "success 90% | unassisted 24% |" in line


def test_a_failure_without_intervention_is_not_an_unassisted_success():
    s = episode_summary([episode(False, 0), episode(True, 0), episode(True, 1), episode(False, 5)])
    assert s["success_rate"] == 0.5 and s["unassisted_success_rate"] == 0.25


def test_each_arm_has_its_own_unassisted_success():
    arms = ArmStats(window=50)
    arms.add("a", 200, [episode(True, 0, 100), episode(True, 40, 100)])
    arms.add("b", 100, [episode(True, 0, 100)])
    s = arms.summary()
    assert s["arm/a/unassisted_success_rate"] == 0.5 and s["arm/b/unassisted_success_rate"] == 1.0
