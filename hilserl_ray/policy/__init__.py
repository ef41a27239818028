"""The HIL-SERL SAC agent: encoders, actor, critic ensemble, discrete gripper critic."""
