"""Real SO-101: Feetech bus, calibration, cameras, teleoperation devices."""
