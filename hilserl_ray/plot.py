"""`python -m hilserl_ray.plot <output_dir> [--out curves.png]`: learning curves from metrics.jsonl
(a fleet's run: one thin curve per arm under the pooled one)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hilserl_ray.errors import UserError, command
from hilserl_ray.fleet.stats import ARM_PREFIX, arm_names
from hilserl_ray.runtime.metrics import read_metrics

PANELS = (
    ("success_rate", "success rate (recent episodes)"),
    ("episode_return", "episode return"),
    ("intervention_rate", "intervention rate"),
    ("updates_per_s", "learner updates/s"),
)


def plot(output_dir: Path, out: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(output_dir)
    if not rows:
        raise UserError(
            "no metrics here", where=str(Path(output_dir) / "metrics.jsonl"), fix="has the run logged yet?"
        )
    out = Path(out) if out else Path(output_dir) / "curves.png"
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    arms = arm_names({k: None for r in rows for k in r})
    fleet = len(arms) > 1  # per-arm curves (thin) under the pooled one
    for ax, (key, title) in zip(axes.flat, PANELS, strict=True):
        if fleet and key != "updates_per_s":
            for name in arms:
                _curve(ax, rows, f"{ARM_PREFIX}{name}/{key}", lw=1.0, alpha=0.8, label=name)
        _curve(ax, rows, key, lw=2.0 if fleet else 1.5, color="black" if fleet else None, label="pooled")
        if fleet and key != "updates_per_s":
            ax.legend(fontsize=8)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("env steps")
    fig.suptitle(Path(output_dir).name)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _curve(ax, rows: list[dict], key: str, **style) -> None:
    pts = [(r["env_steps"], r[key]) for r in rows if key in r]
    if pts:
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, **style)


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hilserl_ray.plot", description=__doc__)
    p.add_argument("output_dir", type=Path)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    print(plot(args.output_dir, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
