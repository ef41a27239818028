"""The offline cache: hits are memory-mapped and identical, misses on any change, corrupt -> rebuilt."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from hilserl_ray.configio import load_config
from hilserl_ray.data import convert as convert_mod
from hilserl_ray.data.convert import load_offline_transitions
from hilserl_ray.data.lerobot_reader import LeRobotReader
from hilserl_ray.data.synthetic import write_dataset
from hilserl_ray.envs.pipeline import pipeline_spec

CAM = "observation.images.front"


def make_cfg(root, out, **overrides):
    data = {
        "env.cameras": [{"name": "front", "width": 64, "height": 48}],
        "pipeline.image.size": [32, 32],
        "dataset.path": str(root),
        "dataset.cache_dir": str(out / "cache"),
        "output_dir": str(out),
    }
    data.update(overrides)
    return load_config(None, data)


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "ds", [4, 6, 3], cameras={"front": (48, 64)}, codec="h264")


@pytest.fixture
def count_conversions(monkeypatch):
    calls = []
    real = convert_mod.convert

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(convert_mod, "convert", counting)
    return calls


def caches(out):
    return sorted(p.name for p in (out / "cache").iterdir())


def test_second_load_is_a_memory_mapped_hit_with_identical_arrays(dataset, tmp_path, count_conversions):
    cfg = make_cfg(dataset, tmp_path / "out")
    first = {k: np.array(v) for k, v in load_offline_transitions(cfg, progress=False).items()}
    second = load_offline_transitions(cfg, progress=False)
    assert len(count_conversions) == 1
    assert all(isinstance(v, np.memmap) for v in second.values())
    assert not second[CAM].flags.writeable  # learner-side copies only
    assert first.keys() == second.keys()
    for k in first:
        np.testing.assert_array_equal(first[k], second[k])
    (d,) = caches(tmp_path / "out")
    assert d.startswith("offline-")
    manifest = json.loads((tmp_path / "out/cache" / d / "manifest.json").read_text())
    assert manifest["summary"]["frames"] == 13 and manifest["spec"]["observation"]["observation.state"][
        "shape"
    ] == [18]


def test_state_dim_or_image_size_change_never_loads_a_stale_cache(dataset, tmp_path, count_conversions):
    out = tmp_path / "out"
    full = load_offline_transitions(make_cfg(dataset, out), progress=False)
    assert full["observation.state"].shape == (16, 18)
    joints_only = {"pipeline.proprio": {"joint_velocity": False, "ee_pose": False}}
    small = load_offline_transitions(make_cfg(dataset, out, **joints_only), progress=False)
    assert small["observation.state"].shape == (16, 6)
    np.testing.assert_array_equal(small["observation.state"], full["observation.state"][:, :6])
    bigger = load_offline_transitions(
        make_cfg(dataset, out, **{"pipeline.image.size": [24, 24]}), progress=False
    )
    assert bigger[CAM].shape == (16, 24, 24, 3)
    assert len(count_conversions) == 3 and len(caches(out)) == 2  # the oldest was pruned


def test_an_edited_dataset_misses_the_cache(dataset, tmp_path, count_conversions):
    cfg = make_cfg(dataset, tmp_path / "out")
    load_offline_transitions(cfg, progress=False)
    data = dataset / "data/chunk-000/file-000.parquet"
    st = data.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    load_offline_transitions(cfg, progress=False)
    assert len(count_conversions) == 2


@pytest.mark.parametrize("damage", ["truncate_images", "garbage_manifest", "flip_state", "no_manifest"])
def test_corrupt_cache_is_rebuilt_with_a_warning(dataset, tmp_path, caplog, count_conversions, damage):
    cfg = make_cfg(dataset, tmp_path / "out")
    good = {k: np.array(v) for k, v in load_offline_transitions(cfg, progress=False).items()}
    (d,) = (tmp_path / "out/cache").iterdir()
    if damage == "truncate_images":
        f = d / f"{CAM}.npy"
        f.write_bytes(f.read_bytes()[:-100])
    elif damage == "garbage_manifest":
        (d / "manifest.json").write_text("{not json")
    elif damage == "no_manifest":
        (d / "manifest.json").unlink()
    else:
        f = d / "observation.state.npy"
        raw = bytearray(f.read_bytes())
        raw[-3] ^= 0xFF
        f.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        again = load_offline_transitions(cfg, progress=False)
    assert len(count_conversions) == 2
    assert any("corrupt" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    for k in good:
        np.testing.assert_array_equal(good[k], again[k])


def test_interrupted_build_leaves_no_cache(dataset, tmp_path, monkeypatch):
    cfg = make_cfg(dataset, tmp_path / "out")
    real = LeRobotReader.frames

    def interrupted(self, *a, **k):
        for n, item in enumerate(real(self, *a, **k)):
            if n == 5:
                raise KeyboardInterrupt  # Ctrl+C mid-conversion
            yield item

    monkeypatch.setattr(LeRobotReader, "frames", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_offline_transitions(cfg, progress=False)
    assert caches(tmp_path / "out") == []  # neither a half-written cache nor its temp dir
    monkeypatch.setattr(LeRobotReader, "frames", real)
    assert load_offline_transitions(cfg, progress=False)["is_last"].sum() == 3


def test_cache_off_converts_in_memory(dataset, tmp_path):
    cfg = make_cfg(dataset, tmp_path / "out", **{"dataset.cache": False})
    chunk = load_offline_transitions(cfg, pipeline_spec(cfg), progress=False)
    assert not isinstance(chunk[CAM], np.memmap) and not (tmp_path / "out/cache").exists()


def test_shared_cache_prunes_per_dataset(dataset, tmp_path):
    """One cache dir for every run and dataset: a dataset's old conversions go, others' stay."""
    other = write_dataset(tmp_path / "other", [3], cameras={"front": (48, 64)}, codec="h264")
    shared = {"dataset.cache_dir": str(tmp_path / "shared")}
    load_offline_transitions(make_cfg(other, tmp_path / "a", **shared), progress=False)
    for size in ([16, 16], [24, 24], [32, 32]):  # three pipelines on the first dataset
        cfg = make_cfg(dataset, tmp_path / "b", **shared, **{"pipeline.image.size": size})
        load_offline_transitions(cfg, progress=False)
    names = sorted(p.name for p in (tmp_path / "shared").iterdir())
    tags = [n.split("-")[1] for n in names]
    assert len(names) == 3 and sorted(tags.count(t) for t in set(tags)) == [1, 2]
