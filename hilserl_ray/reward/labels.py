"""Per-frame success labels from datasets, the frames they label, and the by-episode split.

A frame's label says "success is visible in this frame". Sources, first present wins:
1. `complementary_info.success` (recorded per frame: the sim's ground truth, or the human's
   held labelling key / success key on the real arm);
2. `next.reward` > 0.5 (LeRobot's convention: the frame whose step earned the sparse reward;
   dense shaping is a cost <= 0, so it never counts);
3. `next.done` alone: the last frame of every episode that ends done (not truncated).
A dataset with none of them has no labels and is refused. Images come from the dataset
conversion (`data.convert`), i.e. the same crop/resize functions the env and the policy use.
A directory of `.npz` frames (what the env wrapper saves where the human's key contradicted the
classifier, `pipeline.reward.disagreements_dir`) is read as labelled frames too, each its own
episode; they hold processed images already, so their input fingerprint must match.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import ConfigError
from hilserl_ray.data import mapping
from hilserl_ray.data.convert import convert
from hilserl_ray.data.lerobot_reader import DatasetError, LeRobotReader
from hilserl_ray.features import FeatureSpec
from hilserl_ray.reward.spec import fingerprint, input_description

log = logging.getLogger(__name__)
SUCCESS_REWARD = 0.5


@dataclass
class Frames:
    """Every labelled frame: images per camera key, label, episode number and frame index."""

    images: dict[str, np.ndarray]  # key -> (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) bool
    episode: np.ndarray  # (N,) int64: index into episode_names
    frame: np.ndarray  # (N,) int64: frame index within its episode
    episode_names: list[str]  # "<dataset dir name>:<episode index>"
    sources: dict[str, str]  # dataset -> which column the labels came from

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> Frames:
        return Frames(
            {k: v[mask] for k, v in self.images.items()},
            self.labels[mask],
            self.episode[mask],
            self.frame[mask],
            self.episode_names,
            self.sources,
        )


def frame_labels(
    columns: dict[str, np.ndarray], lengths: np.ndarray, done_rule_rewards: np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """Labels for one dataset's frames from whichever label columns it has (see the module doc).

    columns: the dataset's columns by key (any of SUCCESS_LABEL, REWARD, DONE, TRUNCATED), one row
    per frame; lengths: episode lengths in frame order.
    """
    n = int(np.sum(lengths))
    if mapping.SUCCESS_LABEL in columns:
        return np.asarray(columns[mapping.SUCCESS_LABEL]).reshape(n).astype(bool), mapping.SUCCESS_LABEL
    if mapping.REWARD in columns:
        reward = np.asarray(columns[mapping.REWARD], np.float64).reshape(n)
        return reward > SUCCESS_REWARD, mapping.REWARD
    if mapping.DONE in columns:
        done = np.asarray(columns[mapping.DONE]).reshape(n).astype(bool)
        trunc = np.asarray(columns.get(mapping.TRUNCATED, np.zeros(n, bool))).reshape(n).astype(bool)
        last = np.zeros(n, bool)
        last[np.cumsum(lengths) - 1] = True
        return last & done & ~trunc, mapping.DONE
    raise ValueError(
        f"no labels: the dataset has none of {mapping.SUCCESS_LABEL}, {mapping.REWARD}, {mapping.DONE}"
    )


def load_frames(cfg: TrainConfig, spec: FeatureSpec, datasets: list[Path], progress: bool = True) -> Frames:
    """Convert each dataset through the pipeline and label its frames."""

    images: dict[str, list[np.ndarray]] = {k: [] for k in spec.image_keys}
    labels, episode, frame, names, sources = [], [], [], [], {}
    for path in datasets:
        path = Path(path)
        if path.is_dir() and not (path / "meta").exists() and any(path.glob("*.npz")):
            lab, imgs = load_label_files(path, spec, cfg)
            for k in spec.image_keys:
                images[k].append(imgs[k])
            episode.append(len(names) + np.arange(len(lab)))
            frame.append(np.zeros(len(lab), np.int64))
            names += [f"{path.name}:{i}" for i in range(len(lab))]
            labels.append(lab)
            sources[str(path)] = "human keys (saved disagreements)"
            continue
        if not (path / "meta" / "info.json").is_file():
            raise ConfigError(
                "command line", [f"--dataset: got '{path}'; a LeRobot dataset directory (meta/info.json)"]
            )
        dcfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"path": path})})
        try:
            reader = LeRobotReader(path)
            chunk, _ = convert(dcfg, reader=reader, progress=progress)
            lengths = np.array([e.length for e in reader.episodes])
            present = [
                k
                for k in (mapping.SUCCESS_LABEL, mapping.REWARD, mapping.DONE, mapping.TRUNCATED)
                if k in reader.features
            ]
            cols = reader.read(present) if present else {}
            lab, source = frame_labels(cols, lengths)
        except (DatasetError, ValueError) as e:
            raise ConfigError("command line", [f"--dataset '{path}': {e}"]) from e
        rows = ~chunk["is_last"]
        for k in spec.image_keys:
            images[k].append(np.asarray(chunk[k][rows]))
        base = len(names)
        names += [f"{path.name}:{e.index}" for e in reader.episodes]
        episode.append(base + np.repeat(np.arange(len(lengths)), lengths))
        frame.append(np.concatenate([np.arange(n) for n in lengths]))
        labels.append(lab)
        sources[str(path)] = source
        log.info(
            "%s: %d frames, %d labelled success (from %s), %d episodes",
            path,
            len(lab),
            int(lab.sum()),
            source,
            len(lengths),
        )
    return Frames(
        {k: np.concatenate(v) for k, v in images.items()},
        np.concatenate(labels),
        np.concatenate(episode).astype(np.int64),
        np.concatenate(frame).astype(np.int64),
        names,
        sources,
    )


def load_label_files(
    directory: Path, spec: FeatureSpec, cfg: TrainConfig
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels and images of the saved `.npz` frames in `directory` (sorted by name)."""

    want = fingerprint(input_description(spec, cfg))
    files = sorted(Path(directory).glob("*.npz"))
    labels, images = [], {k: [] for k in spec.image_keys}
    for f in files:
        with np.load(f) as z:
            got = str(z["input_fingerprint"]) if "input_fingerprint" in z else ""
            if got and got != want:
                raise ConfigError(
                    "command line",
                    [
                        f"--dataset '{f}': saved for image inputs {got}, this pipeline gives {want} "
                        "(another crop, size or camera); label frames of this pipeline"
                    ],
                )
            for k in spec.image_keys:
                name = k.replace(".", "__")
                if name not in z or z[name].shape != spec.observation[k].shape:
                    raise ConfigError(
                        "command line",
                        [
                            f"--dataset '{f}': expected {k} {spec.observation[k].shape} (this pipeline), got "
                            f"{z[name].shape if name in z else 'no such image'}; saved for another pipeline"
                        ],
                    )
                images[k].append(z[name])
            labels.append(bool(z["label"]))
    return np.array(labels, bool), {k: np.stack(v).astype(np.uint8) for k, v in images.items()}


def split_by_episode(
    episode: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) frame masks: whole episodes go to one side (neighbouring frames are
    near-duplicates, so a random-frame split would grade memory). Stratified: episodes with
    and without a success are split separately, each side keeping at least one when it can."""
    rng = np.random.default_rng(seed)
    eps = np.unique(episode)
    has_pos = np.array([labels[episode == e].any() for e in eps])
    val_eps: list[int] = []
    for group in (eps[has_pos], eps[~has_pos]):
        if len(group) < 2 or val_fraction <= 0:
            continue
        n_val = min(len(group) - 1, max(1, int(round(val_fraction * len(group)))))
        val_eps += list(rng.choice(group, n_val, replace=False))
    val = np.isin(episode, val_eps)
    return ~val, val
