"""Sim and real SO-101 envs and the one wrapper pipeline that both run behind."""
