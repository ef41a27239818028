"""LeRobot v2.1/v3.0 datasets: reader, writer, conversion to offline transitions, cache.

- `convert.load_offline_transitions(cfg, spec, out_dir)`: the learner's offline Chunk, cached
  in `<out_dir>/cache/offline-<key>/` (`python -m hilserl_ray.data.convert --config X` builds it).
- `lerobot_reader.LeRobotReader`, `lerobot_writer.LeRobotWriter`: the dataset format, no lerobot needed.
- `mapping.feature_problems(info, cfg)`: start-up check that a dataset fits the pipeline.
- `python -m hilserl_ray.record`: record demonstrations in this format.
"""
