"""Pictures of a classifier's quality: precision/recall curve + confusion matrix, and a contact
sheet of its worst false positives and false negatives (what a person wants to look at)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hilserl_ray.reward.detector import frame_metrics


def precision_recall(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, threshold) at every distinct probability, highest threshold first."""
    order = np.argsort(-probs, kind="stable")
    p, y = probs[order], np.asarray(labels, bool)[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]  # the last index of each distinct value
    precision = tp[last] / np.maximum(tp[last] + fp[last], 1)
    recall = tp[last] / max(int(y.sum()), 1)
    return precision, recall, p[last]


def plot_quality(
    probs: np.ndarray, labels: np.ndarray, threshold: float, path: Path, title: str = ""
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels, bool)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    precision, recall, thr = precision_recall(probs, labels)
    ax1.plot(recall, precision, lw=2)
    at = np.searchsorted(-thr, -threshold, side="right") - 1
    if 0 <= at < len(thr):
        ax1.plot(recall[at], precision[at], "o", color="C3", label=f"threshold {threshold:.2f}")
        ax1.legend(loc="lower left")
    ax1.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title="precision / recall")
    ax1.grid(alpha=0.3)
    m = frame_metrics(probs, labels, threshold)
    cm = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    ax2.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax2.text(j, i, str(v), ha="center", va="center", fontsize=14, color="black")
    ax2.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["no success", "success"],
        yticklabels=["no success", "success"],
        xlabel="classifier",
        ylabel="label",
        title=f"frames at {threshold:.2f}: balanced acc {m['balanced_accuracy']:.1%}",
    )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def contact_sheet(
    images: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    captions: list[str],
    path: Path,
    threshold: float,
    per_row: int = 8,
) -> Path:
    """Row 1: negatives with the highest probability; row 2: positives with the lowest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels, bool)
    neg, pos = np.flatnonzero(~labels), np.flatnonzero(labels)
    worst_fp = neg[np.argsort(-probs[neg])][:per_row]
    worst_fn = pos[np.argsort(probs[pos])][:per_row]
    fig, axes = plt.subplots(2, per_row, figsize=(1.8 * per_row, 4.4), squeeze=False)
    for r, (idx, what) in enumerate(((worst_fp, "label: no success"), (worst_fn, "label: success"))):
        for c in range(per_row):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(idx):
                i = idx[c]
                wrong = (probs[i] >= threshold) != labels[i]
                ax.imshow(images[i])
                ax.set_title(f"p={probs[i]:.2f}\n{captions[i]}", fontsize=7, color="C3" if wrong else "black")
        axes[r][0].text(-0.1, 0.5, what, transform=axes[r][0].transAxes, rotation=90, va="center", ha="right")
    fig.suptitle(f"worst false positives (top) and false negatives (bottom); red = wrong at {threshold:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
