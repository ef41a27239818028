"""LeRobot v2.1/v3.0 datasets: reader, writer, conversion to offline transitions, cache.

Entry points: `load_offline_transitions(cfg, spec, out_dir)` (the learner's offline Chunk,
cached), `LeRobotReader`, `LeRobotWriter`, and `mapping.feature_problems` (preflight).
"""
