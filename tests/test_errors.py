"""The one error policy: a user error is a few lines and exit 2, a bug keeps its traceback,
--debug / HILSERL_DEBUG shows it, Ctrl+C is 130, and Ray's wrappers are unwrapped."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import ray
from run_helpers import ENV, ROOT, module_command, start_local_ray

from hilserl_ray.configio import ConfigError
from hilserl_ray.data.lerobot_reader import DatasetError
from hilserl_ray.errors import EXIT_INTERRUPTED, EXIT_USER, UserError, command, deferred_init, user_error


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        module_command(*args), cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=120
    )


def test_user_error_names_where_what_and_fix_and_survives_pickling():
    e = UserError("got 'x'; a number", where="env.fps", fix="--env.fps=10")
    assert e.message() == "env.fps: got 'x'; a number\n  fix: --env.fps=10"
    for err in (e, ConfigError("a.yaml", ["env.fps: bad"]), DatasetError("d: truncated")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and back.message() == err.message()
    assert isinstance(DatasetError("x"), ValueError)  # old `except ValueError` callers still catch it


def test_command_wrapper_exit_codes(capsys):
    @command
    def fails(argv):
        raise ConfigError("cfg.yaml", ["env.fps: got 'x'; a number"])

    @command
    def interrupted(argv):
        raise KeyboardInterrupt

    @command
    def sees(argv):
        return len(argv)

    assert fails([]) == EXIT_USER
    err = capsys.readouterr().err
    assert "env.fps: got 'x'" in err and "Traceback" not in err
    assert fails(["--debug"]) == EXIT_USER and "Traceback" in capsys.readouterr().err
    assert interrupted([]) == EXIT_INTERRUPTED and "Traceback" not in capsys.readouterr().err
    assert sees(["--a=1", "--debug"]) == 1  # --debug is taken out for every command


@pytest.mark.subprocess
def test_a_path_the_os_refuses_is_a_user_error_naming_it(tmp_path):
    """A PermissionError naming a file is the files' owner and mode (exit 2); one naming no file
    (e.g. a signal to another user's process) stays a bug with its traceback."""
    assert user_error(RuntimeError("a bug")) is None
    refused = PermissionError(13, "Permission denied", str(tmp_path / "x.yaml"))
    try:
        raise RuntimeError("while loading") from refused
    except RuntimeError as e:
        err = user_error(e)
    assert isinstance(err, UserError) and err.where == str(tmp_path / "x.yaml")
    assert err.message().startswith(f"{tmp_path / 'x.yaml'}: permission denied") and "fix:" in err.message()
    assert user_error(PermissionError(1, "Operation not permitted")) is None


def test_cli_user_error_vs_debug_vs_bug(tmp_path):
    r = run("hilserl_ray.train", "--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = run("hilserl_ray.train", "--config", str(tmp_path / "nope.yaml"), "--debug")
    assert r.returncode == 2 and "Traceback" in r.stderr and "does not exist" in r.stderr
    r = run("hilserl_ray.plot", str(tmp_path), env={**ENV, "HILSERL_DEBUG": "1"})
    assert r.returncode == 2 and "Traceback" in r.stderr and "metrics.jsonl" in r.stderr
    # an internal bug is not dressed up as a user error: it keeps its traceback and exit 1
    code = (
        "from hilserl_ray.errors import command\n"
        "@command\ndef main(argv):\n    return {}['bug']\n"
        "raise SystemExit(main())"
    )
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" in r.stderr and "KeyError" in r.stderr


@pytest.fixture(scope="module")
def small_ray():
    start_local_ray(num_cpus=1)
    yield
    ray.shutdown()


class _Broken:
    def __init__(self, kind: str):
        if kind == "init":
            raise DatasetError("data/demo: episode 3 is missing its video file")

    def task(self):
        raise ConfigError("cfg.yaml", ["robot.port: got '/dev/nope'; an existing serial port"])


@pytest.mark.ray
def test_user_errors_raised_inside_actors_reach_the_driver_intact(small_ray):
    actor_cls = ray.remote(num_cpus=0)(deferred_init(_Broken))
    a = actor_cls.remote("init")
    with pytest.raises(Exception) as e:
        ray.get(a.ready.remote(), timeout=60)
    err = user_error(e.value)
    assert isinstance(err, DatasetError) and err.message() == "data/demo: episode 3 is missing its video file"
    b = actor_cls.remote("ok")
    assert ray.get(b.ready.remote(), timeout=60)
    with pytest.raises(Exception) as e:
        ray.get(b.task.remote(), timeout=60)
    err = user_error(e.value)
    assert isinstance(err, ConfigError) and "robot.port" in err.message()
