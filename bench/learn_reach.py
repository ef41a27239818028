"""SO101Reach from state through the full Ray runtime (target: >= 95% success over the last 50
episodes within 5,000 env steps).

    .venv/bin/python bench/learn_reach.py [--seeds 0 1] [--ablation no_demos|no_interventions|no_rlpd]

Settings: 18-dim proprioception + the target position, dense shaping (a distance cost), 5 demos
recorded by the scripted oracle, the oracle taking over 20% of episodes early on (decaying to 0
over 40 episodes) and after 15 steps without progress, RLPD 50/50 mixing, one SAC update (UTD 2)
per env step (robot actors paced to the learner, as synchronous SAC).
"""

from learning import parse_args, run

# configs/sim_reach.yaml already holds the benchmark's settings; only the logging differs.
OVERRIDES = ["--learner.weights_every=10", "--logging.every_seconds=10"]

if __name__ == "__main__":
    args = parse_args(__doc__, default_steps=5000)
    run("reach", "configs/sim_reach.yaml", OVERRIDES, demos=5, args=args)
