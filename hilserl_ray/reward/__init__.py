"""Reward classifier: success labels, training, evaluation and its use as the env's reward."""
