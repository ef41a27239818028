"""LeRobot v2.1/v3.0 datasets: reader, writer, conversion to offline transitions, cache, export.

- `python -m hilserl_ray.data.inspect DIR [--config X]`: what a dataset holds; the overrides that fit.
- `convert.load_offline_datasets(cfg, spec)`: the learner's offline Chunks (one per dataset in
  `dataset.path` / `dataset.paths`), cached per dataset in a shared, content-keyed directory
  (`convert.cache_root`); `python -m hilserl_ray.data.convert --config X` builds them.
- `formats.decide`: the dataset's action format and joint units (auto), with the reason.
- `lerobot_reader.LeRobotReader`, `lerobot_writer.LeRobotWriter`: the dataset format, no lerobot needed.
- `mapping.feature_problems(info, cfg, root)`: start-up check that a dataset fits the pipeline.
- `python -m hilserl_ray.record`: record demonstrations in this format.
- `python -m hilserl_ray.data.export --run DIR --out DIR`: a run's online transitions as a dataset.
"""
