"""Real SO-101: Feetech bus, calibration, cameras, teleoperation devices.

- `feetech`: STS3215 bus over the official `scservo_sdk` (ping, read/write, sync read/write,
  torque with Lock, LeRobot's configuration, sign-magnitude registers, retries).
- `calibration`: LeRobot-format JSON, raw <-> degrees / 0..100, the guided procedure
  (`python -m hilserl_ray.calibrate`).
- `safety`: the watchdog (the per-step limits, shared with the sim: `hilserl_ray.limits`).
- `camera`: OpenCV cameras with a background reader (`python -m hilserl_ray.find_cameras`).
- `follower` + `robot_env`: the follower arm and `make_real_env(cfg)`, the raw env that
  `rig.make_env` wraps in the pipeline when `robot.type == "so101"`.
- `teleop` + `leader` (+ `keys`, the keyboard both read): keyboard, gamepad and leader-arm `InterventionSource`s
  (`make_teleop_source(cfg)`); pynput/pygame come with the `teleop` extra.

Modules are imported on demand, so the sim never loads serial or camera code.
"""
