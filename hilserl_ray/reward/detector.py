"""When a classifier's per-frame probability counts as success, and how well that matches labels.

One rule for training-time evaluation and for use in the env: success fires on the frame where
the probability has been >= threshold for `consecutive` frames in a row.
"""

from __future__ import annotations

import numpy as np

THRESHOLD_GRID = np.round(np.arange(0.50, 0.96, 0.05), 2)


class SuccessDetector:
    """threshold + consecutive-frames rule over a stream of probabilities (one episode at a time)."""

    def __init__(self, threshold: float, consecutive: int = 1):
        self.threshold, self.consecutive = float(threshold), int(consecutive)
        self.streak = 0

    def reset(self) -> None:
        self.streak = 0

    def update(self, prob: float) -> bool:
        self.streak = self.streak + 1 if prob >= self.threshold else 0
        return self.streak >= self.consecutive


def first_fire(probs: np.ndarray, threshold: float, consecutive: int = 1) -> int | None:
    """Index of the frame where the detector first fires in one episode's probabilities, or None."""
    det = SuccessDetector(threshold, consecutive)
    for i, p in enumerate(probs):
        if det.update(float(p)):
            return i
    return None


def frame_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Frame accuracy, balanced accuracy (mean of the true-positive and true-negative rates), counts."""
    pred = np.asarray(probs) >= threshold
    labels = np.asarray(labels, bool)
    tp, tn = int((pred & labels).sum()), int((~pred & ~labels).sum())
    fp, fn = int((pred & ~labels).sum()), int((~pred & labels).sum())
    tpr = tp / max(tp + fn, 1) if (tp + fn) else float("nan")
    tnr = tn / max(tn + fp, 1) if (tn + fp) else float("nan")
    rates = [r for r in (tpr, tnr) if not np.isnan(r)]
    return {
        "frames": len(labels),
        "accuracy": (tp + tn) / max(len(labels), 1),
        "balanced_accuracy": float(np.mean(rates)) if rates else float("nan"),
        "true_positive_rate": tpr,
        "true_negative_rate": tnr,
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
    }


def episode_report(
    probs: np.ndarray,
    labels: np.ndarray,
    episode: np.ndarray,
    frame: np.ndarray,
    names: list[str],
    threshold: float,
    consecutive: int = 1,
) -> tuple[list[dict], dict]:
    """Per episode: first labelled success frame vs first frame the detector fires; and a summary:
    the false-positive rate on negative episodes (no success label; any firing is a false success)
    and the miss rate on positive ones."""
    rows = []
    for e in np.unique(episode):
        m = episode == e
        order = np.argsort(frame[m])
        p, lab = probs[m][order], labels[m][order]
        fired = first_fire(p, threshold, consecutive)
        first_label = int(np.argmax(lab)) if lab.any() else None
        rows.append(
            {
                "episode": names[int(e)],
                "frames": int(m.sum()),
                "label_first": first_label,
                "fired_first": fired,
                "max_prob": float(p.max()) if len(p) else 0.0,
            }
        )
    neg = [r for r in rows if r["label_first"] is None]
    pos = [r for r in rows if r["label_first"] is not None]
    early = [r for r in pos if r["fired_first"] is not None and r["fired_first"] < r["label_first"]]
    summary = {
        "episodes": len(rows),
        "negative_episodes": len(neg),
        "positive_episodes": len(pos),
        "fp_rate_negative_episodes": (
            sum(r["fired_first"] is not None for r in neg) / len(neg) if neg else float("nan")
        ),
        "miss_rate_positive_episodes": (
            sum(r["fired_first"] is None for r in pos) / len(pos) if pos else float("nan")
        ),
        "fired_early_positive_episodes": len(early),
        "mean_fire_delay_frames": (
            float(np.mean([r["fired_first"] - r["label_first"] for r in pos if r["fired_first"] is not None]))
            if any(r["fired_first"] is not None for r in pos)
            else float("nan")
        ),
    }
    return rows, summary


BA_TOLERANCE = 0.01  # thresholds this close to the best balanced accuracy count as tied


def choose_threshold(probs: np.ndarray, labels: np.ndarray, max_fp_rate: float = 0.005) -> float:
    """A grid threshold (0.50..0.95) for use: among those whose false-positive rate on negative
    frames is <= max_fp_rate (false successes are what hurt RL), the ones within BA_TOLERANCE of
    the best balanced accuracy, and of those the middle one: a margin both ways, since validation
    episodes are few and probabilities just past the best-scoring threshold are what fires falsely
    on new episodes. If none qualifies, the one with the fewest false positives."""
    labels = np.asarray(labels, bool)
    scores = []
    for t in THRESHOLD_GRID:
        m = frame_metrics(probs, labels, float(t))
        fpr = m["fp"] / max(m["fp"] + m["tn"], 1)
        ba = m["balanced_accuracy"] if not np.isnan(m["balanced_accuracy"]) else 0.0
        scores.append((float(t), fpr, ba))
    ok = [s for s in scores if s[1] <= max_fp_rate]
    if not ok:
        return min(scores, key=lambda s: (s[1], -s[0]))[0]
    best = max(s[2] for s in ok)
    tied = [s[0] for s in ok if s[2] >= best - BA_TOLERANCE]
    return tied[len(tied) // 2]
