"""Dataset -> offline Chunk: same observations as the live pipeline, rewards/dones, clear key errors."""

from __future__ import annotations

import numpy as np
import pytest
from fake_sts3215 import LEROBOT_FILE

from hilserl_ray.buffer.chunk import validate_chunk
from hilserl_ray.configio import ConfigError, load_config
from hilserl_ray.data.convert import OFFLINE_EPISODE_ID_BASE, convert, format_report
from hilserl_ray.data.lerobot_reader import DatasetError, LeRobotReader
from hilserl_ray.data.mapping import feature_problems
from hilserl_ray.data.synthetic import read_code, write_dataset
from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.envs.transforms import process_image, proprio_state
from hilserl_ray.preflight import preflight

LENGTHS = [5, 8, 1, 4]
CAM = "observation.images.front"


def make_cfg(root, tmp_path, **overrides):
    data = {
        "env.cameras": [{"name": "front", "width": 64, "height": 48}],
        "pipeline.image.size": [32, 32],
        "dataset.path": str(root),
        "output_dir": str(tmp_path / "out"),
    }
    data.update(overrides)
    return load_config(None, data)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(
        tmp_path_factory.mktemp("ds") / "full", LENGTHS, cameras={"front": (48, 64)}, codec="h264"
    )


def rows_of(lengths):
    """(transition rows, is_last rows) of the chunk layout."""
    last = np.cumsum(np.asarray(lengths) + 1) - 1
    trans = np.setdiff1d(np.arange(last[-1] + 1), last)
    return trans, last


@pytest.mark.parametrize("crop", [None, (4, 8, 40, 48)])
def test_observations_equal_the_live_pipeline(dataset, tmp_path, crop):
    overrides = {"pipeline.image.crop": {"front": list(crop)}} if crop else {}
    cfg = make_cfg(dataset, tmp_path, **overrides)
    spec = pipeline_spec(cfg)
    chunk, summary = convert(cfg, spec, progress=False)
    k, _ = validate_chunk(spec, chunk)  # the buffer accepts it as is
    assert k == sum(LENGTHS) + len(LENGTHS) and summary["frames"] == sum(LENGTHS)
    trans, last = rows_of(LENGTHS)

    r = LeRobotReader(dataset)
    cols = r.read(["observation.state", "action", "next.reward"])
    kin = Kinematics()
    want_state = np.concatenate(
        [
            proprio_state(
                cols["observation.state"][e.start : e.start + e.length], kin, 0.1, cfg.pipeline.proprio
            )
            for e in r.episodes
        ]
    )
    assert chunk["observation.state"].shape[1] == 18
    np.testing.assert_array_equal(chunk["observation.state"][trans], want_state)
    np.testing.assert_array_equal(chunk["observation.state"][last], chunk["observation.state"][last - 1])
    assert (
        chunk["observation.state"][trans[np.r_[0, np.cumsum(LENGTHS)[:-1]]], 6:12] == 0
    ).all()  # velocity 0 first

    frames = {row: img for row, img in r.frames(CAM)}
    want_img = np.stack([process_image(frames[i], crop, (32, 32)) for i in range(sum(LENGTHS))])
    diff = np.abs(chunk[CAM][trans].astype(int) - want_img)
    if crop:  # cropped: exactly process_image of the decoded frame
        assert diff.max() == 0
    else:  # resized in the YUV planes: the same picture within rounding
        assert diff.mean() < 1.0, diff.mean()
    np.testing.assert_array_equal(chunk[CAM][last], chunk[CAM][last - 1])

    np.testing.assert_array_equal(chunk["action"][trans], cols["action"])
    assert (chunk["action"][last] == 0).all() and (chunk["reward"][last] == 0).all()
    np.testing.assert_array_equal(chunk["reward"][trans], cols["next.reward"])
    assert chunk["is_last"][last].all() and not chunk["is_last"][trans].any()
    ids = np.repeat(OFFLINE_EPISODE_ID_BASE + np.arange(len(LENGTHS)), np.asarray(LENGTHS) + 1)
    np.testing.assert_array_equal(chunk["episode_id"], ids)


def test_each_transition_pairs_frame_i_with_frame_i_plus_1_across_episodes(dataset, tmp_path):
    cfg = make_cfg(dataset, tmp_path, **{"pipeline.image.size": [48, 64]})
    chunk, _ = convert(cfg, progress=False)
    codes = np.array([read_code(img) for img in chunk[CAM]])
    trans, last = rows_of(LENGTHS)
    np.testing.assert_array_equal(codes[trans], np.arange(sum(LENGTHS)))  # row's image is its own frame
    ends = last - 1
    inner = np.setdiff1d(trans, ends)
    same_ep = chunk["episode_id"][inner + 1] == chunk["episode_id"][inner]
    assert same_ep.all() and (codes[inner + 1] == codes[inner] + 1).all()
    assert (codes[last] == codes[ends]).all()  # the final observation repeats the last frame
    assert chunk["terminated"][ends].all() and not chunk["terminated"][inner].any()
    assert not chunk["truncated"].any()


@pytest.mark.parametrize("rule", ["success_last_frame", "zero"])
def test_missing_reward_and_done(tmp_path, caplog, rule):
    root = write_dataset(tmp_path / "ds", LENGTHS, reward=False, done=False, codec="h264")
    cfg = make_cfg(root, tmp_path, **{"dataset.missing_reward": rule})
    chunk, summary = convert(cfg, progress=False)
    # the rule used is in the conversion report (printed once, saved next to the cache)
    assert "next.reward" in summary["reward_rule"] and rule in summary["reward_rule"]
    assert "next.reward" in format_report(summary) and "next.done" in summary["done_rule"]
    assert set(summary["missing"]) >= {"next.reward", "next.done"}
    trans, last = rows_of(LENGTHS)
    ends = last - 1
    assert chunk["terminated"][ends].all() and chunk["terminated"].sum() == len(LENGTHS)
    want = 1.0 if rule == "success_last_frame" else 0.0
    assert (chunk["reward"][ends] == want).all() and chunk["reward"].sum() == want * len(LENGTHS)


def test_episode_not_done_at_its_end_is_a_truncation(tmp_path):
    root = write_dataset(tmp_path / "ds", [3, 4], reward=False, last_done=False, codec="h264")
    chunk, report = convert(make_cfg(root, tmp_path), progress=False)
    ends = rows_of([3, 4])[1] - 1
    assert chunk["truncated"][ends].all() and not chunk["terminated"].any()
    assert chunk["reward"].sum() == 0  # not a success: the reward rule gives nothing
    assert "0 of 2 episodes" in report["reward_rule"]


def test_missing_intervention_flags_mean_human_demos(tmp_path):
    root = write_dataset(tmp_path / "ds", [3, 2], complementary=False, codec="h264")
    chunk, _ = convert(make_cfg(root, tmp_path), progress=False)
    assert chunk["is_intervention"].all() and (chunk["discrete_penalty"] == 0).all()


def test_flags_from_the_dataset(dataset, tmp_path):
    chunk, _ = convert(make_cfg(dataset, tmp_path), progress=False)
    trans, _ = rows_of(LENGTHS)
    cols = LeRobotReader(dataset).read(
        ["complementary_info.is_intervention", "complementary_info.discrete_penalty"]
    )
    np.testing.assert_array_equal(chunk["is_intervention"][trans], cols["complementary_info.is_intervention"])
    np.testing.assert_array_equal(
        chunk["discrete_penalty"][trans], cols["complementary_info.discrete_penalty"]
    )


def test_wrong_camera_key_names_the_dataset_keys_and_the_closest(tmp_path):
    root = write_dataset(tmp_path / "ds", [2], cameras={"wrist": (48, 64)}, codec="h264")
    cfg = make_cfg(root, tmp_path)
    with pytest.raises(DatasetError) as e:
        convert(cfg, progress=False)
    msg = str(e.value)
    assert "'observation.images.front'" in msg and "closest: 'observation.images.wrist'" in msg
    assert "'observation.state'" in msg and "'action'" in msg  # the dataset's keys
    assert "dataset.rename" in msg
    with pytest.raises(ConfigError, match="closest: 'observation.images.wrist'"):
        preflight(cfg)  # caught at start-up, before Ray
    cfg = make_cfg(root, tmp_path, **{"dataset.rename": {"observation.images.wrist": CAM}})
    chunk, _ = convert(cfg, progress=False)
    assert chunk[CAM].shape == (3, 32, 32, 3)


def test_feature_problems_lists_every_mismatch(tmp_path):
    root = write_dataset(tmp_path / "ds", [2], state_dim=5, action_dim=3, codec="h264")
    info = LeRobotReader(root).info
    cfg = make_cfg(root, tmp_path, **{"env.fps": 30, "dataset.rename": {"obs.state": "observation.state"}})
    problems = {p: (v, m) for p, v, m in feature_problems(info, cfg)}
    assert "dataset.rename.obs.state" in problems
    assert "closest: 'observation.state'" in problems["dataset.rename.obs.state"][1]
    assert "dataset.rename" in problems and problems["dataset.rename"][0] == "obs.state"
    assert "env.fps" in problems and "10" in problems["env.fps"][1]
    cfg = make_cfg(root, tmp_path)
    problems = {p: (v, m) for p, v, m in feature_problems(info, cfg)}
    assert ">= 6 joint positions" in problems["dataset.features.observation.state"][1]
    assert (
        "action" in problems["dataset.features.action"][1] and "[4]" in problems["dataset.features.action"][1]
    )
    cfg = make_cfg(root, tmp_path, **{"env.cameras": [{"name": "front", "width": 640, "height": 480}]})
    assert any(p == "env.cameras.0" for p, _, _ in feature_problems(info, cfg))


def test_actions_outside_the_policy_range_are_rejected(tmp_path):
    from hilserl_ray.data.lerobot_writer import LeRobotWriter

    feats = {
        "observation.state": {"dtype": "float32", "shape": [6]},
        "action": {"dtype": "float32", "shape": [4]},
    }
    w = LeRobotWriter(tmp_path / "ds", 10, feats, codec="h264")
    for a in ([0.1, 0, 0, 1], [35.0, 0, 0, 1]):  # degrees recorded instead of the normalised action
        w.add_frame({"observation.state": np.zeros(6), "action": np.array(a)})
    w.save_episode()
    w.finalize()
    cfg = make_cfg(tmp_path / "ds", tmp_path, **{"env.cameras": [], "env.environment_state": False})
    # 4 values, not joint names, not inside the bounds: auto cannot tell, and says which setting decides
    with pytest.raises(
        DatasetError, match=r"(?s)dataset.action_format.*cannot tell.*hilserl_ray.data.inspect"
    ):
        convert(cfg, progress=False)
    cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"action_format": "pipeline"})})
    with pytest.raises(DatasetError, match=r"\[-1, 1\].*episode 0 frame 1"):
        convert(cfg, progress=False)


def test_v21_dataset_converts_like_v30(tmp_path):
    v3 = write_dataset(tmp_path / "v3", LENGTHS, cameras={"front": (48, 64)}, codec="h264")
    v2 = write_dataset(tmp_path / "v2", LENGTHS, cameras={"front": (48, 64)}, codec="h264", version="v2.1")
    size = {"pipeline.image.size": [48, 64]}
    a, _ = convert(make_cfg(v3, tmp_path, **size), progress=False)
    b, _ = convert(make_cfg(v2, tmp_path, **size), progress=False)
    for k in a:
        if k != CAM:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert [read_code(i) for i in a[CAM]] == [read_code(i) for i in b[CAM]]


def test_images_stored_in_parquet(tmp_path):
    """dtype 'image' features (PNG bytes in the data parquet, LeRobot without videos)."""
    import json

    import cv2
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hilserl_ray.data.synthetic import code_image

    root = write_dataset(tmp_path / "ds", [3, 2], cameras={}, codec="h264")
    data = root / "data/chunk-000/file-000.parquet"
    t = pq.read_table(data)
    pngs = [
        {"bytes": cv2.imencode(".png", code_image(i, 48, 64)[..., ::-1])[1].tobytes(), "path": None}
        for i in range(5)
    ]
    pq.write_table(t.append_column(CAM, pa.array(pngs)), data)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"][CAM] = {"dtype": "image", "shape": [48, 64, 3], "names": ["height", "width", "channels"]}
    (root / "meta/info.json").write_text(json.dumps(info))
    chunk, _ = convert(make_cfg(root, tmp_path, **{"pipeline.image.size": [48, 64]}), progress=False)
    assert [read_code(i) for i in chunk[CAM]] == [0, 1, 2, 2, 3, 4, 4]
    np.testing.assert_array_equal(chunk[CAM][0], code_image(0, 48, 64))  # lossless


def test_lerobot_range_joint_units_convert_to_degrees(dataset, tmp_path):
    """A dataset recorded with LeRobot's use_degrees=False gives the same observations as in degrees."""
    import json
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    calib = tmp_path / "so101_follower.json"
    calib.write_text(json.dumps(LEROBOT_FILE))
    lo = np.array([c["range_min"] for c in LEROBOT_FILE.values()], float)
    hi = np.array([c["range_max"] for c in LEROBOT_FILE.values()], float)
    ranged = tmp_path / "ranged"
    shutil.copytree(dataset, ranged)
    data = ranged / "data/chunk-000/file-000.parquet"
    t = pq.read_table(data)
    deg = np.array(t.column("observation.state").to_pylist())
    raw = deg * 4095 / 360 + (lo + hi) / 2  # what the servos read at those angles
    rec = (raw - lo) / (hi - lo) * 200 - 100  # what LeRobot stores with use_degrees=False
    rec[:, 5] = deg[:, 5]  # the gripper is 0..100 either way
    col = pa.FixedSizeListArray.from_arrays(pa.array(rec.reshape(-1), pa.float32()), 6)
    pq.write_table(
        t.set_column(t.schema.get_field_index("observation.state"), "observation.state", col), data
    )

    units = {"dataset.joint_units": "lerobot_range"}
    problems = feature_problems(LeRobotReader(ranged).info, make_cfg(ranged, tmp_path, **units))
    assert [p for p, _, _ in problems] == ["robot.calibration"]
    want, _ = convert(make_cfg(dataset, tmp_path), progress=False)
    got, _ = convert(make_cfg(ranged, tmp_path, **units, **{"robot.calibration": str(calib)}), progress=False)
    np.testing.assert_allclose(got["observation.state"], want["observation.state"], atol=2e-3)
    naive, _ = convert(make_cfg(ranged, tmp_path), progress=False)  # read as degrees: wrong angles
    assert np.abs(naive["observation.state"][:, :5] - want["observation.state"][:, :5]).max() > 2.0
