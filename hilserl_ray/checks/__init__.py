"""Every check of a run's inputs, grouped by the stage that can make it.

- `checks.config`: static rules on the config alone (fields that must agree); `configio.load_config`
  runs them, so every command refuses a bad config before it does anything.
- `checks.files`: what the config names on this machine (MJCF, calibrations, devices, classifier,
  encoder weights, each arm of a fleet); `checks.dataset`: the datasets against the pipeline.
- `checks.cluster`: the Ray address and what the cluster offers.

Each rule returns a list of `errors.Problem`; `ConfigError.of` makes them the user's error.
`hilserl_ray.preflight` runs the file and dataset stages before a command starts.
This package imports none of its modules here: import the stage you need.
"""
