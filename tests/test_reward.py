"""Reward classifier: labels from each source, the by-episode split, save/load, the spec check,
the env wrapper's threshold / consecutive-frames / human-override logic, and the CLI end to end."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from hilserl_ray.configio import ConfigError, load_config
from hilserl_ray.data import mapping
from hilserl_ray.data.lerobot_reader import LeRobotReader
from hilserl_ray.envs import wrappers as W
from hilserl_ray.envs.intervention import no_events
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.envs.sim import space_from_features
from hilserl_ray.features import STATE
from hilserl_ray.preflight import preflight
from hilserl_ray.record import ExpertSource, record
from hilserl_ray.reward.detector import choose_threshold, episode_report, first_fire
from hilserl_ray.reward.labels import frame_labels, load_label_files, split_by_episode
from hilserl_ray.reward.spec import check_classifier, classifier_meta, input_spec

IMG = [32, 32]


def sim_cfg(tmp_path, **overrides):
    data = {
        "env.task": "pick_cube",
        "env.max_episode_steps": 40,
        "env.cameras": [{"name": "gripper_cam", "width": 48, "height": 48}],
        "pipeline.image.size": IMG,
        "pipeline.intervention.source": "oracle",
        "output_dir": str(tmp_path / "run"),
    }
    data.update(overrides)
    return load_config(None, data)


# ------------------------------------------------------------------------------------ labels
def test_labels_prefer_the_per_frame_success_column():
    cols = {
        mapping.SUCCESS_LABEL: np.array([0, 1, 1, 0, 0], bool),
        mapping.REWARD: np.array([0, 0, 1, 0, 0], np.float32),
    }
    labels, source = frame_labels(cols, np.array([3, 2]))
    assert source == mapping.SUCCESS_LABEL and labels.tolist() == [False, True, True, False, False]


def test_labels_from_next_reward_ignore_dense_shaping_costs():
    reward = np.array([-0.15, -0.05, 0.9, -0.2, 1.0, 0.0], np.float32)  # success + shaping cost <= 0
    labels, source = frame_labels({mapping.REWARD: reward}, np.array([3, 3]))
    assert source == mapping.REWARD and labels.tolist() == [False, False, True, False, True, False]


def test_labels_from_next_done_alone_mark_the_end_of_episodes_that_end_done():
    cols = {
        mapping.DONE: np.array([0, 0, 1, 0, 1, 0, 1], bool),
        mapping.TRUNCATED: np.array([0, 0, 0, 0, 1, 0, 0], bool),  # episode 2 hit the time limit
    }
    labels, source = frame_labels(cols, np.array([3, 2, 2]))
    assert source == mapping.DONE and labels.tolist() == [False, False, True, False, False, False, True]


def test_a_dataset_without_any_label_column_is_refused():
    with pytest.raises(ValueError, match="no labels"):
        frame_labels({}, np.array([4]))


@pytest.fixture(scope="module")
def sim_labelled(tmp_path_factory):
    """One expert success that keeps holding the cube, and one episode per deliberate failure
    (labels: sim ground truth)."""
    tmp = tmp_path_factory.mktemp("lab")
    cfg = sim_cfg(tmp, seed=3)
    kw = {"codec": "h264", "progress": False, "until_time_limit": True}
    return cfg, [
        record(cfg, 1, tmp / mode, expert=mode, **kw) for mode in ("success", "near_miss", "slip", "hover")
    ]


def test_sim_recording_labels_frames_with_ground_truth_and_keeps_going_after_success(sim_labelled):
    _, paths = sim_labelled
    for path, lifts in zip(paths, (True, False, False, False), strict=True):
        r = LeRobotReader(path)
        cols = r.read([mapping.SUCCESS_LABEL, mapping.REWARD, mapping.DONE, "action"])
        assert [e.length for e in r.episodes] == [40]  # a success does not end it: more positive frames
        label, reward = cols[mapping.SUCCESS_LABEL].reshape(-1), cols[mapping.REWARD].reshape(-1)
        assert np.flatnonzero(cols[mapping.DONE]).tolist() == [39] and not label[0]
        # frame i+1 shows what step i earned: the label is the reward shifted by one frame
        assert (label[1:] == (reward[:-1] > 0.5)).all()
        assert (label.sum() >= 10) if lifts else not label.any()  # failures never lift it 4 cm
        gripper = cols["action"][:, 3].tolist()
        closes = gripper.index(0) if 0 in gripper else None
        assert closes is not None  # every mode closes the jaws somewhere (on the cube, beside it, above it)
        if path.name == "slip":  # grasp, then let go
            assert 2 in gripper[closes:]


class HeldKeySource:
    """A person labelling: holds the success key on steps 3-5, presses success on step 7."""

    def __init__(self, spec):
        self.t, self.neutral = 0, np.array([0, 0, 0, 1], np.float32)

    def reset(self):
        self.t = 0

    def action(self, obs, env):
        self.t += 1
        return self.neutral

    def events(self):
        return {**no_events(), "success": self.t == 7}

    def success_held(self):
        return 3 <= self.t <= 5

    def close(self):
        pass


def test_held_key_and_success_key_label_frames_while_recording(tmp_path):
    cfg = sim_cfg(tmp_path, **{"pipeline.intervention.source": "none", "buffer.online_ratio": 1.0})
    out = record(cfg, 1, tmp_path / "d", codec="h264", progress=False, source=HeldKeySource(None))
    cols = LeRobotReader(out).read([mapping.SUCCESS_LABEL, mapping.REWARD, mapping.DONE])
    # the person's word labels the frames (nothing is lifted here, so the sim's truth adds none)
    assert cols[mapping.SUCCESS_LABEL].reshape(-1).tolist() == [False, False, True, True, True, False, True]
    assert cols[mapping.REWARD].reshape(-1)[-1] == 1.0 and cols[mapping.DONE].reshape(-1)[-1]


# ------------------------------------------------------------------------------------- split
def test_split_is_by_whole_episodes_stratified_and_seeded():
    episode = np.repeat(np.arange(10), 5)
    labels = np.zeros(50, bool)
    labels[episode < 5] = np.tile([0, 0, 0, 1, 1], 5).astype(bool)  # episodes 0-4 succeed
    train, val = split_by_episode(episode, labels, 0.2, seed=1)
    assert not (train & val).any() and (train | val).all()
    assert not set(episode[train]) & set(episode[val])  # no episode on both sides
    val_eps = set(episode[val])
    assert len(val_eps & {0, 1, 2, 3, 4}) == 1 and len(val_eps & {5, 6, 7, 8, 9}) == 1
    assert (split_by_episode(episode, labels, 0.2, seed=1)[1] == val).all()


# ------------------------------------------------------------------------------- detector rule
def test_detector_fires_after_consecutive_frames_and_grades_negative_episodes():
    probs = np.array([0.9, 0.2, 0.8, 0.85, 0.9, 0.1])
    assert (
        first_fire(probs, 0.7, 1) == 0 and first_fire(probs, 0.7, 2) == 3 and first_fire(probs, 0.95) is None
    )
    labels = np.array([0, 0, 0, 0, 1, 1, 0, 0, 0], bool)
    p = np.array([0.1, 0.2, 0.1, 0.3, 0.9, 0.95, 0.1, 0.8, 0.2])
    episode, frame = np.array([0] * 6 + [1] * 3), np.array([0, 1, 2, 3, 4, 5, 0, 1, 2])
    rows, summary = episode_report(p, labels, episode, frame, ["a", "b"], 0.7)
    assert rows[0]["label_first"] == 4 and rows[0]["fired_first"] == 4
    assert rows[1]["label_first"] is None and rows[1]["fired_first"] == 1
    assert summary["fp_rate_negative_episodes"] == 1.0 and summary["miss_rate_positive_episodes"] == 0.0
    assert choose_threshold(p, labels) == 0.9  # the middle of 0.85 and 0.9, both perfect here
    assert choose_threshold(np.array([0.1, 0.99]), np.array([False, True])) == 0.75  # middle of 0.5..0.95


# ------------------------------------------------------------------------ save / load / spec
@pytest.fixture
def saved_classifier(tmp_path, seeded_single_thread_torch):
    import torch

    from hilserl_ray.reward.model import RewardClassifier, save

    cfg = sim_cfg(tmp_path)
    spec = input_spec(cfg)
    model = RewardClassifier(spec, cfg.policy).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save(model, classifier_meta(cfg, spec, 0.8), tmp_path / "clf")
    return cfg, model, tmp_path / "clf"


def test_save_load_round_trip_gives_the_same_probabilities(saved_classifier):
    import torch

    from hilserl_ray.reward.model import Scorer

    cfg, model, directory = saved_classifier
    scorer = Scorer(directory)
    assert scorer.threshold == 0.8 and scorer.keys == ["observation.images.gripper_cam"]
    imgs = np.random.default_rng(0).integers(0, 256, (5, *IMG, 3), dtype=np.uint8)
    with torch.no_grad():
        want = torch.sigmoid(model({"observation.images.gripper_cam": torch.from_numpy(imgs)})).numpy()
    got = scorer.batch({"observation.images.gripper_cam": imgs})
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert abs(scorer({"observation.images.gripper_cam": imgs[2]}) - want[2]) < 1e-6
    assert (
        check_classifier(sim_cfg(cfg.output_dir.parent, **{"pipeline.reward.classifier": str(directory)}))
        == []
    )


def test_a_classifier_for_another_pipeline_is_refused_at_start_up_by_name(saved_classifier, tmp_path, capsys):
    _, _, directory = saved_classifier
    other = sim_cfg(
        tmp_path, **{"pipeline.reward.classifier": str(directory), "pipeline.image.size": [24, 24]}
    )
    problems = check_classifier(other)
    assert [p[0] for p in problems][:2] == [
        "pipeline.reward.classifier (observation.images.gripper_cam)",
        "pipeline.image.size",
    ]
    assert "[32, 32]" in problems[1][2] and "retrain" in problems[1][2]
    with pytest.raises(ConfigError, match="pipeline.image.size"):
        preflight(other)
    cropped = sim_cfg(
        tmp_path,
        **{
            "pipeline.reward.classifier": str(directory),
            "pipeline.image.crop": {"gripper_cam": [0, 0, 40, 40]},
        },
    )
    assert [p[0] for p in check_classifier(cropped)] == ["pipeline.image.crop"]
    missing = sim_cfg(tmp_path, **{"pipeline.reward.classifier": str(tmp_path / "nope")})
    assert "classifier.json" in check_classifier(missing)[0][2]
    # the training CLI refuses before Ray starts: exit 2, the key named, no traceback
    from hilserl_ray.train import main

    rc = main(_cli_args(other, tmp_path))
    err = capsys.readouterr().err
    assert rc == 2 and "pipeline.image.size" in err and "Traceback" not in err


def test_a_cut_classifier_is_refused_at_start_up_naming_its_file(saved_classifier, tmp_path, capsys):
    """A model.safetensors cut in half (a copy that stopped) is found before Ray, not in the actor."""
    import shutil

    cfg, _, directory = saved_classifier
    cut = tmp_path / "cut_classifier"
    shutil.copytree(directory, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    bad = sim_cfg(cfg.output_dir.parent, **{"pipeline.reward.classifier": str(cut)})
    (problem,) = check_classifier(bad)
    assert problem[0] == "pipeline.reward.classifier" and str(weights) in problem[2]
    assert "not a complete safetensors file" in problem[2]
    from hilserl_ray.train import main

    rc = main(_cli_args(bad, tmp_path))
    err = capsys.readouterr().err
    assert rc == 2 and "model.safetensors" in err and "Traceback" not in err


def _cli_args(cfg, tmp_path):
    from hilserl_ray.configio import to_yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(to_yaml(cfg))
    return ["--config", str(path), "--dry-run"]


# ----------------------------------------------------------------------------------- wrapper
class FakeRobot(gym.Env):
    """Pipeline-shaped observations; terminates on its own 'ground truth' at step 2 (to be ignored)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.feature_spec = spec = pipeline_spec(cfg)
        self.observation_space = space_from_features(spec.observation)
        self.action_space = gym.spaces.Box(-1, 1, spec.action.shape, np.float32)
        self.gripper = 50.0
        self.t = 0

    def _obs(self):
        obs = {k: np.zeros(f.shape, f.dtype) for k, f in self.feature_spec.observation.items()}
        obs[STATE][5] = self.gripper
        return obs

    def reset(self, **kw):
        self.t = 0
        return self._obs(), {"is_success": False}

    def step(self, action):
        self.t += 1
        return self._obs(), 5.0, self.t == 2, False, {"is_success": self.t == 2}


class ScriptedKeys:
    def __init__(self):
        self.next = no_events()

    def reset(self):
        pass

    def action(self, obs, env):
        return None

    def events(self):
        out, self.next = self.next, no_events()
        return out

    def close(self):
        pass


def wrapped(tmp_path, probs, consecutive=1, **reward):
    cfg = sim_cfg(
        tmp_path,
        **{
            "pipeline.reward.consecutive_frames": consecutive,
            **{f"pipeline.reward.{k}": v for k, v in reward.items()},
        },
    )
    stream = iter(probs)
    keys = ScriptedKeys()
    env = W.ClassifierReward(W.Intervention(FakeRobot(cfg), keys), cfg, lambda obs: next(stream), 0.7)
    env.reset()
    return env, keys


def test_wrapper_threshold_and_consecutive_frames_decide_success(tmp_path):
    env, _ = wrapped(tmp_path, [0.9, 0.5, 0.8, 0.75], consecutive=2)
    steps = [env.step(np.zeros(4, np.float32)) for _ in range(4)]
    rewards = [s[1] for s in steps]
    terminated = [s[2] for s in steps]
    assert rewards == [0.0, 0.0, 0.0, 1.0] and terminated == [False, False, False, True]
    # the robot's own termination (step 2) and reward (5.0) never leak through; it is kept as info
    assert steps[1][4]["env_success"] and not steps[1][4]["is_success"]
    assert [s[4]["classifier_prob"] for s in steps] == [0.9, 0.5, 0.8, 0.75]
    assert steps[3][4]["is_success"] and steps[3][4]["classifier_success"]


def test_human_keys_win_and_disagreements_are_counted_and_saved(tmp_path):
    env, keys = wrapped(tmp_path, [0.1, 0.2, 0.95], disagreements_dir=str(tmp_path / "dis"))
    obs, r, term, _, info = env.step(np.zeros(4, np.float32))
    assert (r, term, env.disagreements) == (0.0, False, 0)
    keys.next = {**no_events(), "success": True}  # the person sees success the classifier misses
    _, r, term, _, info = env.step(np.zeros(4, np.float32))
    assert (r, term, info["is_success"], info["classifier_disagreement"]) == (1.0, True, True, True)
    env.reset()
    keys.next = {**no_events(), "failure": True}  # the classifier fires, the person says no
    _, r, term, _, info = env.step(np.zeros(4, np.float32))
    assert (r, term, info["is_success"], env.disagreements) == (0.0, True, False, 2)
    # saved as new labels, which `reward train --dataset <dir>` reads
    labels, images = load_label_files(tmp_path / "dis", input_spec(env.unwrapped.cfg), env.unwrapped.cfg)
    assert labels.tolist() == [True, False] and images["observation.images.gripper_cam"].shape == (2, *IMG, 3)


def test_state_check_vetoes_the_classifier(tmp_path):
    env, _ = wrapped(tmp_path, [0.99, 0.99], max_gripper=30.0)
    assert env.step(np.zeros(4, np.float32))[1] == 0.0  # jaws open (50): not holding anything
    env.unwrapped.gripper = 20.0
    assert env.step(np.zeros(4, np.float32))[1] == 1.0


# ------------------------------------------------------------------------------- CLI end to end
def test_train_and_evaluate_cli_write_a_usable_classifier(
    sim_labelled, tmp_path, capsys, seeded_single_thread_torch
):
    from hilserl_ray.configio import to_yaml
    from hilserl_ray.reward.__main__ import main
    from hilserl_ray.rig import make_env

    cfg, (succ, miss, *_) = sim_labelled
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(to_yaml(cfg))
    out = tmp_path / "clf"
    data = ["--dataset", str(succ), "--dataset", str(miss)]
    args = ["train", "--config", str(cfg_path), *data, "--out", str(out)]
    assert main([*args, "--steps", "30", "--batch-size", "16", "--no-progress"]) == 0
    for f in ("model.safetensors", "classifier.json", "quality.png", "worst.png"):
        assert (out / f).is_file()
    meta = json.loads((out / "classifier.json").read_text())
    assert (
        meta["pipeline_fingerprint"] == pipeline_spec(cfg).fingerprint() and 0.5 <= meta["threshold"] <= 0.95
    )
    assert meta["label_sources"] == {str(succ): mapping.SUCCESS_LABEL, str(miss): mapping.SUCCESS_LABEL}
    assert main([*args, "--steps", "30"]) == 2  # refuses to replace it without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(out), *data, "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "balanced accuracy" in text and "false-positive rate on negative episodes" in text
    assert "success:0" in text and "near_miss:0" in text  # per episode: first frame fired vs label
    # used in the pipeline: the env's reward is the classifier's decision, with its probability
    use = load_config(cfg_path, [f"--pipeline.reward.classifier={out}"])
    env = make_env(use, seed=0, intervention=ExpertSource(use, 0))
    try:
        env.reset(seed=0)
        _, r, _, _, info = env.step(np.array([0, 0, 0, 1], np.float32))
        assert 0.0 <= info["classifier_prob"] <= 1.0 and r in (0.0, 1.0) and "env_success" in info
    finally:
        env.close()


def test_a_frozen_pretrained_backbone_travels_in_the_classifier_weights(tmp_path, seeded_single_thread_torch):
    import torch
    from test_policy_io import _resnet10_weights

    from hilserl_ray.reward.model import RewardClassifier, Scorer, save

    weights = tmp_path / "resnet10.safetensors"
    _resnet10_weights(weights)
    cfg = sim_cfg(tmp_path, **{"policy.encoder": "pretrained", "policy.encoder_weights": str(weights)})
    spec = input_spec(cfg)
    model = RewardClassifier(spec, cfg.policy).eval()
    assert not any(p.requires_grad for p in model.encoder.pretrained.parameters())  # frozen body
    assert any(p.requires_grad for p in model.encoder.images.parameters())  # its pooling + bottleneck train
    save(model, classifier_meta(cfg, spec, 0.7), tmp_path / "clf")
    weights.unlink()  # the robot need not have the file
    imgs = np.random.default_rng(1).integers(0, 256, (3, *IMG, 3), dtype=np.uint8)
    key = "observation.images.gripper_cam"
    with torch.no_grad():
        want = torch.sigmoid(model({key: torch.from_numpy(imgs)})).numpy()
    np.testing.assert_allclose(Scorer(tmp_path / "clf").batch({key: imgs}), want, atol=1e-6)


def test_record_refuses_deliberate_failures_where_no_scripted_expert_acts(tmp_path, capsys):
    from hilserl_ray.record import main

    args = [
        "--config",
        _cli_args(sim_cfg(tmp_path), tmp_path)[1],
        "--episodes",
        "1",
        "--out",
        str(tmp_path / "d"),
    ]
    assert main([*args, "--expert", "slip", "--assist", "rule"]) == 2
    err = capsys.readouterr().err
    assert "--expert: got 'slip'" in err and "Traceback" not in err and not (tmp_path / "d").exists()
