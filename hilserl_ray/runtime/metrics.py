"""Metrics a user can plot: one JSON line per log event in `<output_dir>/metrics.jsonl`, the same
scalars as TensorBoard events in `<output_dir>/tb/`, and a short console line.

A line that does not fit on the disk is taken back (the file ends with a whole line) and is a
`DiskFull`: the driver stops the run."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

from hilserl_ray.errors import disk_full_as
from hilserl_ray.fleet.stats import ARM_PREFIX, arm_names


class MetricsLogger:
    def __init__(self, output_dir: Path, tensorboard: bool = True):
        self.path = Path(output_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab", buffering=0)  # unbuffered: nothing left to fail at close
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(output_dir) / "tb"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in scalars.items() if v is not None and math.isfinite(float(v))}
        line = memoryview((json.dumps({"time": time.time(), "env_steps": step, **clean}) + "\n").encode())
        end = self._file.seek(0, 2)
        try:
            with disk_full_as(self.path.parent, "writing metrics"):
                while line:
                    line = line[self._file.write(line) :]
        except BaseException:
            with contextlib.suppress(OSError):
                self._file.truncate(end)
            raise
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(output_dir: Path) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return rows


def console_line(s: dict) -> str:
    parts = [f"env_steps {int(s.get('env_steps', 0)):>7d}", f"updates {int(s.get('updates', 0)):>6d}"]
    for key, fmt in (
        ("episodes", "episodes {:.0f}"),
        ("success_rate", "success {:.0%}"),
        ("unassisted_success_rate", "unassisted {:.0%}"),
        ("env_success_rate", "(env's own {:.0%})"),
        ("episode_return", "return {:+.2f}"),
        ("intervention_rate", "intervention {:.0%}"),
        ("updates_per_s", "{:.2f} upd/s"),
        ("policy_hz", "policy {:.1f} Hz"),
    ):
        if key in s and s[key] is not None:
            parts.append(fmt.format(s[key]))
    arms = arm_names(s)
    if len(arms) > 1:  # a fleet: each arm's share, so a lagging arm (or human) shows
        parts += [arm_part(s, name) for name in arms]
    return " | ".join(parts)


def arm_part(s: dict, name: str) -> str:
    p = f"{ARM_PREFIX}{name}/"
    out = f"{name}: {int(s.get(p + 'episodes', 0))} ep"
    if p + "success_rate" in s:
        out += f" {s[p + 'success_rate']:.0%} ok {s[p + 'intervention_rate']:.0%} iv"
    if s.get(p + "alive") == 0:
        out += " FAILED"
    return out
