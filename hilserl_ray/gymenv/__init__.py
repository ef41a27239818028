"""Any registered gymnasium env (dict observations, a Box action) behind the same pipeline, runtime and demos."""
