"""LeRobot dataset writer -> reader: layout lerobot expects, values, and frame alignment in videos."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hilserl_ray.data.lerobot_reader import DatasetError, LeRobotReader
from hilserl_ray.data.lerobot_writer import LeRobotWriter
from hilserl_ray.data.synthetic import code_image, joint_trajectory, read_code, write_dataset
from hilserl_ray.data.video import decode
from hilserl_ray.envs.transforms import process_image

LENGTHS = [4, 9, 1, 6]  # uneven, with a one-frame episode, all in one video file (v3.0)


@pytest.mark.parametrize(("codec", "version"), [("av1", "v3.0"), ("h264", "v3.0"), ("h264", "v2.1")])
def test_round_trip_values_and_frames(tmp_path, codec, version):
    root = write_dataset(tmp_path / "ds", LENGTHS, cameras={"front": (48, 64)}, codec=codec, version=version)
    r = LeRobotReader(root)
    n = sum(LENGTHS)
    assert r.version == version and r.num_frames == n and r.fps == 10
    assert [e.length for e in r.episodes] == LENGTHS
    cols = r.read(
        ["observation.state", "action", "next.reward", "next.done", "complementary_info.is_intervention"]
    )
    np.testing.assert_array_equal(cols["observation.state"], joint_trajectory(np.arange(n)))
    ends = np.cumsum(LENGTHS) - 1
    assert np.flatnonzero(cols["next.done"]).tolist() == ends.tolist()
    assert np.flatnonzero(cols["next.reward"]).tolist() == ends.tolist()
    assert cols["next.reward"].dtype == np.float32 and cols["next.done"].dtype == bool
    rows = []
    for row, img in r.frames("observation.images.front"):
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        assert read_code(img) == row, f"row {row} holds the image of frame {read_code(img)}"
        assert np.abs(img.astype(int) - code_image(row, 48, 64)).mean() < 12  # lossy, but the same picture
        rows.append(row)
    assert rows == list(range(n))


def test_v3_layout_is_what_lerobot_reads(tmp_path):
    root = write_dataset(tmp_path / "ds", LENGTHS, cameras={"front": (48, 64)}, codec="av1")
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["total_episodes"] == len(LENGTHS) and info["total_frames"] == sum(LENGTHS)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["splits"] == {"train": f"0:{len(LENGTHS)}"} and info["fps"] == 10
    cam = info["features"]["observation.images.front"]
    assert cam["dtype"] == "video" and cam["shape"] == [48, 64, 3]
    assert cam["names"] == ["height", "width", "channels"]
    assert cam["info"]["video.codec"] == "av1" and cam["info"]["video.pix_fmt"] == "yuv420p"
    for builtin in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert builtin in info["features"]

    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    state_type = data.schema.field("observation.state").type
    assert pa.types.is_fixed_size_list(state_type) and state_type.list_size == 6
    assert state_type.value_type == pa.float32()
    assert str(data.schema.field("next.reward").type) == "float"
    assert data.column("index").to_pylist() == list(range(sum(LENGTHS)))
    ts = np.array(data.column("timestamp").to_pylist())
    np.testing.assert_allclose(ts, np.array(data.column("frame_index").to_pylist()) / 10, atol=1e-6)

    eps = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pydict()
    assert eps["length"] == LENGTHS and eps["tasks"] == [["pick the cube"]] * len(LENGTHS)
    starts = np.r_[0, np.cumsum(LENGTHS)[:-1]]
    assert eps["dataset_from_index"] == starts.tolist()
    assert eps["dataset_to_index"] == np.cumsum(LENGTHS).tolist()
    np.testing.assert_allclose(eps["videos/observation.images.front/from_timestamp"], starts / 10)
    np.testing.assert_allclose(eps["videos/observation.images.front/to_timestamp"], np.cumsum(LENGTHS) / 10)
    assert "stats/observation.state/mean" in eps

    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.to_pydict() == {"task_index": [0], "task": ["pick the cube"]}
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == [
        "task"
    ]  # pandas: task is the index
    stats = json.loads((root / "meta/stats.json").read_text())
    assert np.array(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    assert stats["observation.state"]["count"] == [sum(LENGTHS)]


def test_episode_boundaries_inside_one_video_file(tmp_path):
    """Frame i of every episode maps to from_timestamp + i / fps in the shared file."""
    root = write_dataset(tmp_path / "ds", LENGTHS, cameras={"front": (48, 64)}, codec="h264", fps=30)
    r = LeRobotReader(root)
    paths = {e.videos["observation.images.front"][0] for e in r.episodes}
    assert len(paths) == 1  # every episode shares one file
    times = [float(t) for t, _ in decode(paths.pop())]
    assert len(times) == sum(LENGTHS)
    for e in r.episodes:
        path, start = e.videos["observation.images.front"]
        for i in range(e.length):
            assert abs(times[e.start + i] - (start + i / 30)) < 1e-4
    codes = {row: read_code(img) for row, img in r.frames("observation.images.front", size=(24, 32))}
    assert codes == {row: row for row in range(sum(LENGTHS))}


def test_video_files_roll_over_and_still_align(tmp_path):
    root = write_dataset(
        tmp_path / "ds", [5, 5, 5], cameras={"front": (48, 64)}, codec="h264", video_files_size_in_mb=1e-6
    )
    r = LeRobotReader(root)
    assert len({e.videos["observation.images.front"][0] for e in r.episodes}) == 3
    assert {e.videos["observation.images.front"][1] for e in r.episodes} == {0.0}
    assert all(read_code(img) == row for row, img in r.frames("observation.images.front"))


def test_frames_skip_unsaved_frames_and_report_missing_ones(tmp_path):
    w = LeRobotWriter(
        tmp_path / "ds",
        10,
        {"observation.images.cam": {"dtype": "video", "shape": [32, 32, 3]}},
        codec="h264",
    )
    for i in range(3):
        w.add_frame({"observation.images.cam": code_image(i, 32, 32)})
    w.save_episode()
    with w:  # an interrupted episode: its frames reach the video but not the metadata
        w.add_frame({"observation.images.cam": code_image(99, 32, 32)})
    r = LeRobotReader(tmp_path / "ds")
    assert [read_code(img) for _, img in r.frames("observation.images.cam")] == [0, 1, 2]

    ep_file = tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet"
    t = pq.read_table(ep_file)
    t = t.set_column(t.schema.get_field_index("length"), "length", [[5]])
    pq.write_table(t, ep_file)
    with pytest.raises(DatasetError, match="data files hold 3 frames"):
        LeRobotReader(tmp_path / "ds").read(["frame_index"])


def test_writer_rejects_bad_frames_naming_the_feature(tmp_path):
    w = LeRobotWriter(
        tmp_path / "ds",
        10,
        {
            "observation.state": {"dtype": "float32", "shape": [6]},
            "observation.images.cam": {"dtype": "video", "shape": [32, 32, 3]},
        },
        codec="h264",
    )
    with pytest.raises(ValueError, match=r"observation.images.cam.*\(32, 32, 3\) uint8"):
        w.add_frame(
            {"observation.state": np.zeros(6), "observation.images.cam": np.zeros((32, 32, 3), np.float32)}
        )
    with pytest.raises(ValueError, match=r"missing \['observation.images.cam'\]"):
        w.add_frame({"observation.state": np.zeros(6)})
    with pytest.raises(ValueError, match="observation.state"):
        w.add_frame(
            {"observation.state": np.zeros(5), "observation.images.cam": np.zeros((32, 32, 3), np.uint8)}
        )
    with pytest.raises(FileExistsError):
        write_dataset(tmp_path / "ds2", [1], codec="h264")
        write_dataset(tmp_path / "ds2", [1], codec="h264")


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="no meta/info.json"):
        LeRobotReader(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/info.json").write_text(
        json.dumps({"codebase_version": "v1.6", "fps": 10, "features": {}})
    )
    with pytest.raises(DatasetError, match="'v1.6' is not supported"):
        LeRobotReader(tmp_path)


@pytest.mark.parametrize("codec", ["av1", "h264"])
def test_resized_frames_match_process_image_of_the_decoded_frame(tmp_path, codec):
    """The fast YUV-plane resize gives the live pipeline's image (process_image) within rounding."""
    root = write_dataset(tmp_path / "ds", [6], cameras={"front": (240, 320)}, codec=codec, textured=True)
    r = LeRobotReader(root)
    full = dict(r.frames("observation.images.front"))
    small = dict(r.frames("observation.images.front", size=(64, 64)))
    assert r.converter.fast_frames == 6  # the fast route was taken for every frame
    for row, img in small.items():
        want = process_image(full[row], None, (64, 64)).astype(int)
        diff = np.abs(img.astype(int) - want)
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 3, (diff.mean(), diff.max())
    cropped = dict(r.frames("observation.images.front", size=(64, 64), crop=(10, 20, 200, 200)))
    assert r.converter.fast_frames == 0  # a crop takes the exact route
    for row, img in cropped.items():
        np.testing.assert_array_equal(img, process_image(full[row], (10, 20, 200, 200), (64, 64)))


def test_fast_route_falls_back_when_it_disagrees(tmp_path, monkeypatch):
    from hilserl_ray.data import video

    root = write_dataset(tmp_path / "ds", [3], cameras={"front": (48, 64)}, codec="h264", textured=True)
    monkeypatch.setattr(video, "FAST_CHECK_LEVELS", -1.0)  # as if the colour matrix were wrong
    r = LeRobotReader(root)
    full = dict(r.frames("observation.images.front"))
    for row, img in r.frames("observation.images.front", size=(32, 32)):
        np.testing.assert_array_equal(img, process_image(full[row], None, (32, 32)))
    assert r.converter.fast_frames == 0 and r.converter.exact_frames == 3


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_discarded_episode_leaves_no_trace(tmp_path, version):
    feats = {
        "observation.images.cam": {"dtype": "video", "shape": [32, 32, 3]},
        "x": {"dtype": "float32", "shape": [1]},
    }
    w = LeRobotWriter(tmp_path / "ds", 10, feats, codec="h264", version=version)
    codes = iter(range(100))
    for keep in (True, False, True):
        for _ in range(3):
            i = next(codes)
            w.add_frame({"observation.images.cam": code_image(i, 32, 32), "x": np.float32(i)})
        w.save_episode() if keep else w.discard_episode()
    w.finalize()
    r = LeRobotReader(tmp_path / "ds")
    assert [e.length for e in r.episodes] == [3, 3]
    assert r.read(["x"])["x"].tolist() == [0, 1, 2, 6, 7, 8]
    assert [read_code(img) for _, img in r.frames("observation.images.cam")] == [0, 1, 2, 6, 7, 8]
