"""The Ray runtime: learner actor, robot actors, driver loop, checkpoints, metrics."""
