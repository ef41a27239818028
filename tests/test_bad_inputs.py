"""The bad-input corpus, found before Ray starts: for every case the real command exits 2, prints
no traceback, names the cause, and leaves the user's files as they were.

Cheap cases call each command's `main(argv)` (the same path `python -m` takes, error policy
included); a representative few run as subprocesses. Corpus files live in tests/bad_inputs/;
damaged datasets and checkpoints are made from good ones here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from run_helpers import ENV, ROOT, learner_run, train_command

from hilserl_ray import convert, evaluate, record, train
from hilserl_ray.data.synthetic import write_dataset

CORPUS = Path(__file__).resolve().parent / "bad_inputs"


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (or `root` itself) -> content hash: 'unchanged' is checked with it."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def user_error(capsys, rc: int, *expect: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    for text in expect:
        assert text in err, f"{text!r} not in:\n{err[-2000:]}"
    return err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ configs
CONFIG_CASES = {
    "empty.yaml": "the file is empty",
    "comments_only.yaml": "the file is empty",
    "duplicate_top_key.yaml": "key 'env' appears twice",
    "duplicate_nested_key.yaml": "key 'fps' appears twice",
    "inf_fps.yaml": "env.fps: got inf",
    "nan_lr.yaml": "policy.actor_lr: got nan",
    "bad_device.yaml": "policy.device: got 'banana'",
    "not_yaml.yaml": "not valid YAML",
    "list_top.yaml": "the top level must be a mapping",
    "empty_output_dir.yaml": "output_dir: got ''",
    "oracle_joint_actions.yaml": "pipeline.ee_action.enabled: got False",
    "leader_without_calibration.yaml": "pipeline.intervention.leader_calibration",
}


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_bad_config_file(name, capsys):
    path = CORPUS / "configs" / name
    before = snapshot(path)
    rc = train.main(["--config", str(path), "--dry-run"])
    user_error(capsys, rc, CONFIG_CASES[name])
    assert snapshot(path) == before


def test_binary_config_file(tmp_path, capsys):
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 4)
    user_error(capsys, train.main(["--config", str(path), "--dry-run"]), "not a text file")


GOOD = str(CORPUS / "configs" / "good_reach.yaml")
COMMAND_LINE_CASES = [
    (["--env.fps=.inf"], "env.fps: got inf"),
    (["--output_dir="], "output_dir: got ''"),
    (["--policy.device=cuda"], "policy.device"),  # this machine has no CUDA (CI neither)
    (["--learner.num_gpus=1"], "learner.num_gpus"),
    (["--env.cameras.0.height=10"], "env.cameras is an empty list"),
    (["--policy.device", "--dry-run"], "no value given"),
    (["--resume", "--overwrite"], "exclude each other"),
]


@pytest.mark.parametrize("extra,expect", COMMAND_LINE_CASES, ids=[" ".join(c[0]) for c in COMMAND_LINE_CASES])
def test_bad_command_line(extra, expect, tmp_path, capsys):
    import torch

    if ("cuda" in " ".join(extra) or "num_gpus" in " ".join(extra)) and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = train.main(["--config", GOOD, f"--output_dir={tmp_path / 'run'}", "--dry-run", *extra])
    user_error(capsys, rc, expect)


def test_ray_address_that_nothing_answers(tmp_path, capsys):
    addr = f"127.0.0.1:{free_port()}"
    rc = train.main(["--config", GOOD, f"--output_dir={tmp_path}", f"--ray.address={addr}", "--dry-run"])
    user_error(capsys, rc, "ray.address", addr)


def test_output_dir_that_is_a_file_or_unwritable(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("mine")
    rc = train.main(["--config", GOOD, f"--output_dir={f}", "--dry-run"])
    user_error(capsys, rc, "which is a file")
    assert f.read_text() == "mine"
    if os.geteuid() == 0:
        return  # root may write anywhere
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc = train.main(["--config", GOOD, f"--output_dir={ro / 'run'}", "--dry-run"])
        user_error(capsys, rc, "not writable")
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------------------ calibrations
CALIBRATION_CASES = {
    "missing_joint.json": "no entry for motors ['wrist_flex']",
    "non_numeric.json": "fields must be integers",
    "inverted_range.json": "range_min < range_max",
    "empty.json": "not valid JSON",
    "not_an_object.json": "expected an object",
    "missing_field.json": "expected fields",
}


def real_args(tmp_path: Path, follower: Path, leader: Path) -> list[str]:
    port = tmp_path / "ttyACM0"  # not under /dev: the device check leaves it to the robot actor
    port.touch()
    return [
        "--config",
        str(ROOT / "configs" / "so101_real.yaml"),
        f"--output_dir={tmp_path / 'run'}",
        f"--robot.calibration={follower}",
        f"--pipeline.intervention.leader_calibration={leader}",
        f"--robot.port={port}",
        f"--pipeline.intervention.leader_port={port}",
        f"--env.cameras.0.device={port}",
        "--learner.num_gpus=0",
        "--dry-run",
    ]


@pytest.mark.parametrize("name", sorted(CALIBRATION_CASES))
@pytest.mark.parametrize("arm", ["follower", "leader"])
def test_bad_calibration_found_by_dry_run(name, arm, tmp_path, capsys):
    good, bad = CORPUS / "calibrations" / "good.json", CORPUS / "calibrations" / name
    args = real_args(tmp_path, bad if arm == "follower" else good, bad if arm == "leader" else good)
    key = "robot.calibration" if arm == "follower" else "pipeline.intervention.leader_calibration"
    before = snapshot(bad)
    user_error(capsys, train.main(args), key, name, CALIBRATION_CASES[name])
    assert snapshot(bad) == before


def test_real_arm_dry_run_passes_with_good_files_and_names_missing_devices(tmp_path, capsys):
    good = CORPUS / "calibrations" / "good.json"
    assert train.main(real_args(tmp_path, good, good)) == 0
    capsys.readouterr()
    args = real_args(tmp_path, good, good)
    args[args.index(next(a for a in args if a.startswith("--robot.port=")))] = "--robot.port=/dev/ttyNOPE9"
    args[args.index(next(a for a in args if a.startswith("--env.cameras.0.device=")))] = (
        "--env.cameras.0.device=/dev/v4l/by-id/no-such-camera"
    )
    user_error(
        capsys, train.main(args), "robot.port", "/dev/ttyNOPE9", "env.cameras.0.device", "no-such-camera"
    )


# ---------------------------------------------------------------------------------- datasets
@pytest.fixture(scope="module")
def good_dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ds") / "demos", [6, 5, 4], codec="h264")


def dataset_config(tmp_path: Path, root: Path, **extra) -> Path:
    cfg = {
        "env": {"task": "reach", "cameras": [{"name": "front", "width": 64, "height": 48}]},
        "pipeline": {"image": {"size": [32, 32]}},
        "dataset": {"path": str(root)},
        "output_dir": str(tmp_path / "run"),
        "logging": {"progress_bar": False},
        **extra,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _rewrite_parquet(path: Path, edit) -> None:
    t = pq.read_table(path)
    pq.write_table(edit(t), path)


def _set_column(t: pa.Table, name: str, values) -> pa.Table:
    return t.set_column(
        t.schema.get_field_index(name), name, pa.array(values, type=t.schema.field(name).type)
    )


def _nan_state(t: pa.Table) -> pa.Table:
    rows = t.column("observation.state").to_pylist()
    rows[3][1] = float("nan")
    return _set_column(t, "observation.state", rows)


def _short_state(t: pa.Table) -> pa.Table:
    """Rows of 5 joint values where meta/info.json says 6."""
    rows = [r[:5] for r in t.column("observation.state").to_pylist()]
    i = t.schema.get_field_index("observation.state")
    return t.set_column(i, "observation.state", pa.array(rows, type=pa.list_(pa.float32())))


def _frame_gap(t: pa.Table) -> pa.Table:
    fi = t.column("frame_index").to_pylist()
    fi[2] = 7
    return _set_column(t, "frame_index", fi)


def _info(root: Path, edit) -> None:
    path = root / "meta" / "info.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


DATA = "data/chunk-000/file-000.parquet"
VIDEO = "videos/observation.images.front/chunk-000/file-000.mp4"
DATASET_CASES = {
    "truncated_parquet": (lambda r: _truncate(r / DATA, 0.5), "file-000.parquet: unreadable parquet"),
    "truncated_video": (lambda r: _truncate(r / VIDEO, 0.4), "file-000.mp4"),
    "missing_video": (lambda r: (r / VIDEO).unlink(), "file-000.mp4"),
    "missing_column": (
        lambda r: _rewrite_parquet(r / DATA, lambda t: t.drop(["action"])),
        "no columns ['action']",
    ),
    "nan_state": (lambda r: _rewrite_parquet(r / DATA, _nan_state), "observation.state"),
    "frame_gap": (lambda r: _rewrite_parquet(r / DATA, _frame_gap), "frame_index"),
    "short_state_rows": (
        lambda r: _rewrite_parquet(r / DATA, _short_state),
        "file-000.parquet: 'observation.state' rows hold 5 values, meta/info.json says 6",
    ),
    "unsupported_version": (
        lambda r: _info(r, lambda i: i.update(codebase_version="v1.6")),
        "'v1.6' is not supported",
    ),
    "version_2_0": (
        lambda r: _info(r, lambda i: i.update(codebase_version="v2.0")),
        ("'v2.0' is not supported", "v3.0 and v2.1", "lerobot.datasets.v21.convert_dataset_v20_to_v21"),
    ),
    "wrong_state_length": (
        lambda r: _info(r, lambda i: i["features"]["observation.state"].update(shape=[4])),
        "observation.state",
    ),
    "video_size_not_info_json": (
        lambda r: _info(r, lambda i: i["features"]["observation.images.front"].update(shape=[96, 128, 3])),
        "frames are 48x64 (HxW), meta/info.json says observation.images.front is 96x128",
    ),
    "info_not_json": (lambda r: (r / "meta" / "info.json").write_text("{"), "valid JSON"),
    "features_a_list": (
        lambda r: _info(r, lambda i: i.update(features=[{"name": k, **f} for k, f in i["features"].items()])),
        "meta/info.json'; 'features' is a list",
    ),
    "no_info_json": (lambda r: (r / "meta" / "info.json").unlink(), "meta/info.json"),
}


def _texts(expect: str | tuple[str, ...]) -> tuple[str, ...]:
    return (expect,) if isinstance(expect, str) else expect


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_bad_dataset_data_convert(case, good_dataset, tmp_path, capsys):
    damage, expect = DATASET_CASES[case]
    root = tmp_path / "demos"
    shutil.copytree(good_dataset, root)
    damage(root)
    cams = (
        {"env": {"task": "reach", "cameras": [{"name": "front", "width": 128, "height": 96}]}}
        if case == "video_size_not_info_json"
        else {}
    )
    cfg = dataset_config(tmp_path, root, **cams)
    before = snapshot(root)
    user_error(capsys, convert.main(["--config", str(cfg)]), *_texts(expect))
    assert snapshot(root) == before


# what the dry run names beyond the case's text: the damaged file, and a fix
DRY_RUN_FILES = {"truncated_parquet": DATA, "truncated_video": VIDEO, "nan_state": DATA}


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_bad_dataset_train_dry_run(case, good_dataset, tmp_path, capsys, monkeypatch):
    """`--dry-run` reads the dataset as the run does before Ray: whatever the conversion refuses,
    it refuses (exit 2, named), without converting, caching or changing anything."""
    damage, expect = DATASET_CASES[case]
    root = tmp_path / "demos"
    shutil.copytree(good_dataset, root)
    damage(root)
    cache_dir = tmp_path / "offline_cache"
    monkeypatch.setenv("HILSERL_RAY_CACHE_DIR", str(cache_dir))
    cams = (
        {"env": {"task": "reach", "cameras": [{"name": "front", "width": 128, "height": 96}]}}
        if case == "video_size_not_info_json"
        else {}
    )
    before = snapshot(root)
    err = user_error(
        capsys,
        train.main(["--config", str(dataset_config(tmp_path, root, **cams)), "--dry-run"]),
        *_texts(expect),
    )
    if case in DRY_RUN_FILES:
        assert f"{root / DRY_RUN_FILES[case]}: " in err and "\n  fix: " in err, err
    if case == "nan_state":
        assert "non-finite value at episode 0 frame 3" in err, err
    assert snapshot(root) == before
    assert not cache_dir.exists() and not (tmp_path / "run").exists()


def test_dry_run_reads_a_good_dataset_says_what_only_the_run_checks_and_trusts_a_valid_cache(
    good_dataset, tmp_path, capsys
):
    args = ["--config", str(dataset_config(tmp_path, good_dataset)), "--dry-run"]
    assert train.main(args) == 0
    out = capsys.readouterr().out
    assert f"dataset {good_dataset}: 3 episodes, 15 frames read" in out and "1 video file(s)" in out
    only = out.split("only the real run checks:")[1]
    assert "every video frame decoded" in only and "the cluster's resources once Ray is up" in only
    assert out.rstrip().splitlines()[-1].startswith("config OK")
    # converted (as the run does before Ray): the dry run says the cache is valid and reads no more
    assert convert.main(["--config", str(dataset_config(tmp_path, good_dataset))]) == 0
    capsys.readouterr()
    assert train.main(args) == 0
    out = capsys.readouterr().out
    assert f"dataset {good_dataset}: its offline cache for this config is valid" in out, out


@pytest.mark.parametrize("command", ["convert", "train --dry-run"])
def test_calibration_without_a_motor_for_range_unit_conversion(command, good_dataset, tmp_path, capsys):
    """dataset.joint_units lerobot_range converts with robot.calibration: every joint must be in it."""
    bad = CORPUS / "calibrations" / "missing_joint.json"
    extra = {
        "dataset": {"path": str(good_dataset), "joint_units": "lerobot_range"},
        "robot": {"calibration": str(bad)},
    }
    cfg = str(dataset_config(tmp_path, good_dataset, **extra))
    rc = (
        convert.main(["--config", cfg])
        if command == "convert"
        else train.main(["--config", cfg, "--dry-run"])
    )
    user_error(
        capsys,
        rc,
        "robot.calibration",
        str(bad),
        "no entry for motors ['wrist_flex']",
        "hilserl_ray.calibrate",
    )


def test_good_dataset_converts(good_dataset, tmp_path, capsys):
    assert convert.main(["--config", str(dataset_config(tmp_path, good_dataset))]) == 0
    assert "15 transitions, 3 episodes" in capsys.readouterr().out


@pytest.mark.subprocess
def test_train_names_a_damaged_dataset_before_ray_starts(good_dataset, tmp_path):
    root = tmp_path / "demos"
    shutil.copytree(good_dataset, root)
    _truncate(root / VIDEO, 0.4)
    r = subprocess.run(
        train_command("--config", str(dataset_config(tmp_path, root))),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "file-000.mp4" in r.stderr and "Ray" not in r.stdout + r.stderr
    assert not (tmp_path / "run" / ".hilserl_run").exists()  # nothing claimed: the same command can run again


# ------------------------------------------------------------------------ output dir safety
WITH_CAMERA = ["--env.cameras=[{name: front, width: 64, height: 48}]", "--pipeline.image.size=[32,32]"]


def test_overwrite_never_deletes_what_is_not_a_run(good_dataset, tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    monkeypatch.chdir(home)
    monkeypatch.setenv("HOME", str(home))
    ds = tmp_path / "data" / "demos"
    shutil.copytree(good_dataset, ds)
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("mine")
    (foreign / "checkpoints").mkdir()  # looks a bit like a run, but holds a file no run makes
    kept = {**snapshot(home), **snapshot(ds), **snapshot(foreign)}
    cases = [
        (["--output_dir="], "output_dir: got ''"),
        (["--output_dir=."], "current directory"),
        ([f"--output_dir={home}"], "current directory"),
        ([f"--output_dir={ds}", f"--dataset.path={ds}", *WITH_CAMERA], "dataset.path"),
        ([f"--output_dir={ds.parent}", f"--dataset.path={ds}", *WITH_CAMERA], "dataset.path"),
        ([f"--output_dir={foreign}"], "chapter1.tex"),
    ]
    for extra, expect in cases:
        rc = train.main(["--config", GOOD, "--overwrite", *extra])
        user_error(capsys, rc, expect)
    # without --overwrite a directory of someone else's files is refused too
    user_error(capsys, train.main(["--config", GOOD, f"--output_dir={foreign}"]), "not a run's")
    assert {**snapshot(home), **snapshot(ds), **snapshot(foreign)} == kept


@pytest.mark.subprocess
def test_overwrite_of_a_dataset_dir_refused_as_a_subprocess(good_dataset, tmp_path):
    ds = tmp_path / "demos"
    shutil.copytree(good_dataset, ds)
    before = snapshot(ds)
    r = subprocess.run(
        train_command(
            "--config", GOOD, "--overwrite", f"--output_dir={ds}", f"--dataset.path={ds}", *WITH_CAMERA
        ),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "dataset.path" in r.stderr, r.stderr
    assert snapshot(ds) == before


# ------------------------------------------------------- files this user may not read or write
@pytest.fixture(scope="module")
def unprivileged() -> list[str]:
    """The prefix that runs a command as a user without root's rights: none for a user who is not
    root; nobody (setpriv) under root, who may read and write anything (skipped where nobody cannot)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: no unprivileged user to run the command as")
    as_nobody = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    probe = subprocess.run(
        [*as_nobody, sys.executable, "-c", "import hilserl_ray.train"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot import this tree with {sys.executable}: {probe.stderr[-300:]}")
    return as_nobody


@pytest.fixture
def shared_tmp():
    """A directory every user may enter and write (pytest's tmp_path is root's own under root)."""
    d = Path(tempfile.mkdtemp(prefix="hilserl-perm-"))
    d.chmod(0o777)
    (d / "home").mkdir(mode=0o777)
    yield d
    for p in [d, *d.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(d)


def make_read_only(*paths: Path) -> None:
    """Readable and not writable by the unprivileged user (root's own dirs are, for nobody)."""
    for p in paths:
        p.chmod((0o755 if os.geteuid() == 0 else 0o555) if p.is_dir() else 0o444)


def run_as(
    prefix: list[str], shared: Path, module: str, *args: str, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**ENV, "HOME": str(shared / "home"), "MPLCONFIGDIR": str(shared / "home"), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def named(r: subprocess.CompletedProcess, *expect: str) -> None:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout[-2000:] + r.stderr[-3000:]
    for text in expect:
        assert text in r.stderr, f"{text!r} not in:\n{r.stderr[-2000:]}"


@pytest.mark.subprocess
def test_unreadable_config_file(unprivileged, shared_tmp):
    """A config in a directory this user cannot enter (a PermissionError traceback), or unreadable."""
    closed = shared_tmp / "closed"
    closed.mkdir()
    cfg = closed / "cfg.yaml"
    shutil.copy(GOOD, cfg)
    closed.chmod(0o000)
    r = run_as(unprivileged, shared_tmp, "hilserl_ray.train", "--config", str(cfg), "--dry-run")
    named(r, str(cfg), f"permission denied: this user cannot enter {closed}", "fix:")
    closed.chmod(0o755)
    cfg.chmod(0o000)
    r = run_as(unprivileged, shared_tmp, "hilserl_ray.train", "--config", str(cfg), "--dry-run")
    named(r, str(cfg), "cannot be read (Permission denied)")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A run's output dir with checkpoints, written by the learner itself (no Ray)."""
    return learner_run(tmp_path_factory.mktemp("perm") / "run")


@pytest.mark.subprocess
def test_read_only_run_directory(unprivileged, small_run, good_dataset, shared_tmp):
    """Where a command writes (a run directory, record's --out, the dataset cache) this user may not."""
    ro = shared_tmp / "ro"
    run = ro / "run"
    shutil.copytree(small_run, run)
    make_read_only(*run.rglob("*"), run, ro)  # as another user's run usually is
    r = run_as(unprivileged, shared_tmp, "hilserl_ray.evaluate", str(run), "--episodes", "1")
    named(r, f"output_dir: got '{run}'; evaluate writes eval.json there, and '{run}' is not writable")
    run.chmod(0o777)  # the run dir writable, but a checkpoint of another user closed to this one
    (run / "checkpoints" / "0000000030").chmod(0o700 if os.geteuid() == 0 else 0o000)
    r = run_as(unprivileged, shared_tmp, "hilserl_ray.evaluate", str(run), "--episodes", "1", "--no-video")
    named(r, f"permission denied: this user cannot enter {run / 'checkpoints' / '0000000030'}")

    record = ["--config", GOOD, "--pipeline.intervention.source=oracle", "--episodes", "1"]
    r = run_as(unprivileged, shared_tmp, "hilserl_ray.record", *record, "--out", str(ro / "demos"))
    named(r, f"--out: got '{ro / 'demos'}'; '{ro}' is not writable by this user")

    demos = shared_tmp / "demos"
    shutil.copytree(good_dataset, demos)
    cfg = dataset_config(shared_tmp, demos)
    cache = ro / "cache"
    for args in (
        ["hilserl_ray.convert", "--config", str(cfg)],
        ["hilserl_ray.train", "--config", str(cfg), "--dry-run"],
    ):
        r = run_as(unprivileged, shared_tmp, *args, HILSERL_RAY_CACHE_DIR=str(cache))
        named(r, f"dataset.cache_dir: got '{cache}'", f"('{ro}' is not)")
    train_args = ["--config", GOOD, f"--output_dir={ro / 'out'}", "--dry-run"]
    r = run_as(unprivileged, shared_tmp, "hilserl_ray.train", *train_args)
    named(r, f"output_dir: got '{ro / 'out'}'; '{ro}' is not writable by this user")


# ---------------------------------------------------------------------------- other commands
def test_evaluate_zero_episodes_refused_and_eval_json_kept(tmp_path, capsys):
    (tmp_path / "eval.json").write_text('{"success_rate": 0.9}')
    user_error(capsys, evaluate.main([str(tmp_path), "--episodes", "0"]), "--episodes: got 0")
    assert (tmp_path / "eval.json").read_text() == '{"success_rate": 0.9}'
    user_error(capsys, evaluate.main([str(tmp_path)]), "no complete checkpoint")


@pytest.mark.parametrize("kind", ["file", "foreign_dir"])
def test_record_out_existing_refused(kind, tmp_path, capsys):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("mine")
    else:
        out.mkdir()
        (out / "mine.txt").write_text("mine")
    before = snapshot(out)
    rc = record.main(
        ["--config", str(ROOT / "configs" / "sim_reach.yaml"), "--episodes", "1", "--out", str(out)]
    )
    user_error(capsys, rc, "--out", str(out))
    assert snapshot(out) == before


def test_plot_without_metrics(tmp_path, capsys):
    from hilserl_ray import plot

    user_error(capsys, plot.main([str(tmp_path)]), "metrics.jsonl")


def test_hints_work_when_pasted(good_dataset, tmp_path, capsys):
    """The camera-size and action-format hints name keys the override parser takes."""
    base = [
        "--config",
        GOOD,
        f"--output_dir={tmp_path / 'run'}",
        f"--dataset.path={good_dataset}",
        "--dry-run",
    ]
    wrong_camera = ["--env.cameras=[{name: front, width: 128, height: 96}]", "--pipeline.image.size=[32,32]"]
    err = user_error(
        capsys, train.main([*base, *wrong_camera]), "--env.cameras.0.height=48 --env.cameras.0.width=64"
    )
    hint = err.split("; set ")[1].split(" so crop")[0].split()
    assert train.main([*base, *wrong_camera, *hint]) == 0
    capsys.readouterr()

    # the pipeline set to joint deltas (6 values), the dataset recorded in end-effector deltas (4):
    # the hint names the switch, and pasting it fits
    args = [*base, *WITH_CAMERA, "--pipeline.ee_action.enabled=false"]
    err = user_error(capsys, train.main(args), "pipeline.ee_action.enabled", "pipeline.gripper.discrete")
    assert "--pipeline.ee_action.enabled=true gives 4 values" in err
    assert train.main([*args, "--pipeline.ee_action.enabled=true"]) == 0


@pytest.mark.parametrize("bar", [True, False])
def test_progress_bar_key_is_obeyed(bar, good_dataset, tmp_path, capsys):
    cfg = dataset_config(tmp_path, good_dataset, logging={"progress_bar": bar})
    assert convert.main(["--config", str(cfg)]) == 0
    assert ("converting demos" in capsys.readouterr().err) == bar


def test_a_start_that_failed_before_its_claim_does_not_block_the_same_command(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "cache" / "offline-abc").mkdir(parents=True)  # what a failed start may leave
    args = ["--config", GOOD, f"--output_dir={out}", "--dry-run"]
    assert train.main(args) == 0
    (out / ".hilserl_run").write_text("{}")  # a run that started: refused without --resume/--overwrite
    capsys.readouterr()
    user_error(capsys, train.main(args), "it holds a run", "--resume")


def test_cluster_that_cannot_place_the_actors_is_named():
    """What `ray.cluster_resources()` offers against what the run asks for (else Ray waits forever)."""
    from hilserl_ray.configio import ConfigError, load_config
    from hilserl_ray.preflight import check_cluster

    cfg = load_config(GOOD, ["--learner.num_gpus=1", "--actors.num_robot_actors=3"])
    with pytest.raises(ConfigError) as e:
        check_cluster(cfg, {"CPU": 2.0})
    msg = e.value.message()
    assert "learner.num_gpus: got 1" in msg and "cluster's 0 GPUs" in msg and ">= 4 CPUs" in msg
    real = load_config(GOOD, ["--robot.type=so101", "--robot.port=/dev/x", "--robot.calibration=c.json"])
    with pytest.raises(ConfigError, match="ray.robot_resource"):
        check_cluster(real, {"CPU": 8.0})
    check_cluster(
        cfg.model_copy(update={"learner": cfg.learner.model_copy(update={"num_gpus": 0})}), {"CPU": 4.0}
    )
