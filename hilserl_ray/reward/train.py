"""Train a success classifier on labelled dataset frames; evaluate one on held-out episodes.

Training: balanced batches (half success frames, half not, drawn with replacement), DrQ random
shifts (`policy.augment`), AdamW, sigmoid cross-entropy; validation on whole held-out episodes
every `eval_every` steps keeps the weights with the lowest class-balanced validation loss; the
threshold is then chosen on validation frames (`detector.choose_threshold`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import ConfigError, migrate_moved_keys
from hilserl_ray.features import FeatureSpec
from hilserl_ray.policy.augment import random_shift
from hilserl_ray.reward import detector, report
from hilserl_ray.reward.labels import Frames, load_frames, split_by_episode
from hilserl_ray.reward.model import RewardClassifier, Scorer, save
from hilserl_ray.reward.spec import classifier_meta, input_spec, spec_problems

log = logging.getLogger(__name__)


def _probs(model: RewardClassifier, frames: Frames, batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = np.empty(len(frames), np.float32)
    with torch.inference_mode():
        for i in range(0, len(frames), batch_size):
            b = {k: torch.from_numpy(frames.images[k][i : i + batch_size]) for k in model.image_keys}
            out[i : i + batch_size] = torch.sigmoid(model(b)).numpy()
    model.train()
    return out


def balanced_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean of the positive and the negative frames' cross-entropy (class sizes do not matter)."""
    p = np.clip(probs.astype(np.float64), 1e-6, 1 - 1e-6)
    parts = [-np.log(p[labels]).mean()] if labels.any() else []
    if (~labels).any():
        parts.append(-np.log(1 - p[~labels]).mean())
    return float(np.mean(parts))


@dataclass
class TrainingFrames:
    """The labelled frames split by whole episodes; `val` is empty when too few episodes to hold out."""

    frames: Frames
    train: Frames
    val: Frames
    pos: np.ndarray  # training frame indices labelled success
    neg: np.ndarray  # and the others

    @property
    def held_out(self) -> Frames:
        """The frames the threshold is chosen and reported on (training frames if none held out)."""
        return self.val if len(self.val) else self.train


def split_frames(
    cfg: TrainConfig, spec: FeatureSpec, datasets: list[Path], val_fraction: float, seed: int, progress: bool
) -> TrainingFrames:
    """Load the datasets' frames and split them; a training side without both classes is a user error."""
    frames = load_frames(cfg, spec, datasets, progress=progress)
    train_mask, val_mask = split_by_episode(frames.episode, frames.labels, val_fraction, seed)
    tr, va = frames.subset(train_mask), frames.subset(val_mask)
    pos, neg = np.flatnonzero(tr.labels), np.flatnonzero(~tr.labels)
    if len(pos) == 0 or len(neg) == 0:
        raise ConfigError(
            "command line",
            [
                f"--dataset: the training episodes have {len(pos)} success and {len(neg)} other frames; "
                "both are needed (record successes and failures, e.g. hilserl_ray.record --expert mix)"
            ],
        )
    return TrainingFrames(frames, tr, va, pos, neg)


def _avoid_spinning_threads() -> None:
    if os.environ.get("OMP_WAIT_POLICY") != "PASSIVE" and torch.get_num_threads() > 1:
        # torch loaded with spinning OpenMP threads (python -m hilserl_ray.reward avoids it): one
        # thread is then several times faster than two fighting the busy-waiting ones
        torch.set_num_threads(1)


def fit(
    model: RewardClassifier,
    data: TrainingFrames,
    drq_pad: int,
    steps: int,
    batch_size: int,
    lr: float,
    eval_every: int,
    seed: int,
    progress: bool,
) -> int:
    """Train `model` in place and leave it with the weights of the lowest validation loss.

    Returns the step those weights are from (-1: nothing held out, the last weights are kept)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    half = batch_size // 2
    best_loss, best_state, best_step = float("inf"), None, -1
    bar = tqdm(range(1, steps + 1), desc="training reward classifier", unit="step", disable=not progress)
    model.train()
    for step in bar:
        # Balanced batch: half success frames, half not (with replacement), randomly shifted.
        idx = np.concatenate([rng.choice(data.pos, half), rng.choice(data.neg, batch_size - half)])
        batch = {
            k: random_shift(torch.from_numpy(data.train.images[k][idx]), drq_pad, gen)
            for k in model.image_keys
        }
        target = torch.from_numpy(data.train.labels[idx].astype(np.float32))

        loss = F.binary_cross_entropy_with_logits(model(batch), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if len(data.val) and (step % eval_every == 0 or step == steps):
            vloss = balanced_loss(_probs(model, data.val), data.val.labels)
            if vloss < best_loss:
                best_loss, best_step = vloss, step
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{vloss:.3f}")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return best_step


def write_pictures(
    out: Path, frames: Frames, key: str, probs: np.ndarray, threshold: float, title: str
) -> None:
    """quality.png (score distributions) and worst.png (the worst-scored frames of camera `key`)."""
    report.plot_quality(probs, frames.labels, threshold, out / "quality.png", title=title)
    captions = [
        f"{frames.episode_names[int(e)]}/{f}" for e, f in zip(frames.episode, frames.frame, strict=True)
    ]
    report.contact_sheet(frames.images[key], probs, frames.labels, captions, out / "worst.png", threshold)


def train_classifier(
    cfg: TrainConfig,
    datasets: list[Path],
    out: Path,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 3e-4,
    val_fraction: float = 0.2,
    eval_every: int = 250,
    cameras: list[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train, pick the threshold, save weights + JSON + pictures into `out`; returns the JSON."""
    try:
        spec = input_spec(cfg, cameras)
    except ValueError as e:
        raise ConfigError("command line", [f"--camera / env.cameras: {e}"]) from e
    data = split_frames(cfg, spec, datasets, val_fraction, seed, progress)
    _avoid_spinning_threads()
    torch.manual_seed(seed)
    model = RewardClassifier(spec, cfg.policy)
    t0 = time.perf_counter()
    best_step = fit(model, data, cfg.policy.drq_pad, steps, batch_size, lr, eval_every, seed, progress)
    seconds = time.perf_counter() - t0

    held_out, names = data.held_out, data.frames.episode_names
    probs = _probs(model, held_out)
    threshold = detector.choose_threshold(probs, held_out.labels)
    _, episodes = detector.episode_report(
        probs, held_out.labels, held_out.episode, held_out.frame, names, threshold
    )
    meta = classifier_meta(
        cfg,
        spec,
        threshold,
        datasets=[str(d) for d in datasets],
        label_sources=data.frames.sources,
        train={
            "steps": steps,
            "best_step": best_step,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "seconds": round(seconds, 1),
            "frames": len(data.train),
            "positive_frames": len(data.pos),
            "episodes": len(np.unique(data.train.episode)),
        },
        validation={
            "held_out": "episodes" if len(data.val) else "none (too few episodes): training frames",
            "episodes": sorted({names[int(e)] for e in np.unique(held_out.episode)}),
            "frames": detector.frame_metrics(probs, held_out.labels, threshold),
            "episode_summary": episodes,
        },
    )
    out = Path(out)
    save(model, meta, out)
    write_pictures(out, held_out, spec.image_keys[0], probs, threshold, title=f"validation: {out.name}")
    return meta


def evaluate_classifier(
    model_dir: Path,
    datasets: list[Path],
    cfg: TrainConfig | None = None,
    threshold: float | None = None,
    consecutive: int = 1,
    out: Path | None = None,
    progress: bool = True,
) -> dict:
    """Frame and episode metrics of a saved classifier on datasets (optionally pictures into `out`)."""

    scorer = Scorer(model_dir)
    meta = scorer.meta
    if cfg is None:
        cfg = TrainConfig.model_validate(migrate_moved_keys(meta["config"]))
    problems = spec_problems(meta, cfg, key="--model")
    if problems:
        raise ConfigError.of("command line", problems)
    spec = input_spec(cfg, [k.split(".")[-1] for k in meta["input"]["features"]])
    frames = load_frames(cfg, spec, datasets, progress=progress)
    thr = float(meta["threshold"] if threshold is None else threshold)
    probs = scorer.batch(frames.images)
    metrics = detector.frame_metrics(probs, frames.labels, thr)
    rows, summary = detector.episode_report(
        probs, frames.labels, frames.episode, frames.frame, frames.episode_names, thr, consecutive
    )
    result = {
        "model": str(model_dir),
        "threshold": thr,
        "consecutive_frames": consecutive,
        "frames": metrics,
        "episodes": summary,
        "per_episode": rows,
    }
    if out is not None:
        import json

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(result, indent=1))
        write_pictures(out, frames, spec.image_keys[0], probs, thr, title=f"evaluation: {model_dir}")
    return result
