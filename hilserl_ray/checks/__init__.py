"""Every check of a run's inputs, grouped by the stage that can make it.

- `checks.config`: static rules on the config alone (fields that must agree); `configio.load_config`
  runs them, so every command refuses a bad config before it does anything.
- `checks.files`: what the config names on this machine (MJCF, calibrations, devices, encoder
  weights, each arm of a fleet); `checks.dataset`: the datasets (present, fitting the buffer).
- `checks.cluster`: the Ray address and what the cluster offers.

Two file rules live beside the format they check, as other commands call them too:
`data.mapping.feature_problems` (a dataset against the pipeline; `data.inspect`, the conversion)
and `reward.spec.check_classifier` (a classifier against the pipeline; `record`, `make_env`).

Each rule returns a list of `errors.Problem`; `ConfigError.of` makes them the user's error.
`hilserl_ray.preflight` runs the file and dataset stages before a command starts.
This package imports none of its modules here: import the stage you need.
"""
