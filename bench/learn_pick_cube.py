"""SO101PickCube from one 84x84 wrist camera + the 18-dim state, through the full Ray runtime
(target: >= 90% success over the last 50 episodes within 15,000 env steps, interventions < 10%).

    .venv/bin/python bench/learn_pick_cube.py [--seeds 0 1] [--ablation ...] [--steps N]
    .venv/bin/python bench/learn_pick_cube.py --reward classifier --steps 20000

`--reward classifier`: the reward is a trained image classifier's only (sparse, no shaping, no
privileged state; goal deterministic eval >= 80% within 20,000 env steps); the sim's own
success is printed next to it, so false successes show.

Settings: 10 demos recorded by the scripted oracle into a LeRobot v3.0 dataset, the oracle
intervening by its rule (30% of episodes early on, decaying over 100 episodes; after 30 steps
without progress), RLPD 50/50, DrQ shifts, discrete gripper critic with the grasp penalty, one
SAC update (UTD 2, batch 128) per env step.
"""

from learning import parse_args, run

OVERRIDES = [
    "--env.cameras=[{name: gripper_cam, width: 84, height: 84}]",
    "--pipeline.image.size=[84,84]",
    "--env.max_episode_steps=60",
    "--env.dense_reward=true",
    "--policy.batch_size=128",
    "--learner.training_starts=500",
    "--actors.env_steps_per_update=1",
    "--learner.weights_every=10",
    "--pipeline.intervention.oracle.episode_probability=0.3",
    "--pipeline.intervention.oracle.decay_episodes=100",
    "--pipeline.intervention.oracle.stuck_steps=30",
    "--checkpoint.every_updates=5000",
    "--logging.every_seconds=20",
]

if __name__ == "__main__":
    args = parse_args(__doc__, default_steps=15000)
    run("pick_cube", "configs/sim_pick_cube.yaml", OVERRIDES, demos=10, args=args)
