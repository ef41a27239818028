"""docs/real_arm.md cannot drift from the journey that proved it: every command in the guide's bash
blocks is one `python -m hilserl_ray.twin.journey` runs, in the same order, with the same module and
flags (the values, devices and paths, differ). The journey itself: `make journey-smoke`."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from run_helpers import ROOT

GUIDE = ROOT / "docs" / "real_arm.md"
NOT_RUN = ("--resume",)  # continuing a run: the guide's, not a step of the journey


def shape(line: str) -> tuple[str, list[str]]:
    """(module [subcommand], flag names in order) of `.venv/bin/python -m MODULE ...`."""
    words = line.split()
    module = words[words.index("-m") + 1]
    rest = words[words.index("-m") + 2 :]
    if rest and not rest[0].startswith("-") and module == "hilserl_ray.reward":
        module += " " + rest[0]
    return module, [w.split("=", 1)[0] for w in rest if w.startswith("--")]


def guide_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), flags=re.S)
    lines = [x.strip() for b in blocks for x in b.splitlines() if "-m hilserl_ray." in x]
    return [x for x in lines if not any(n in x for n in NOT_RUN)]


@pytest.mark.subprocess
def test_the_guide_spells_the_commands_the_journey_runs():
    out = subprocess.run(
        [sys.executable, "-m", "hilserl_ray.twin.journey", "--print-commands"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    ).stdout
    journey = [shape(x) for x in out.splitlines() if "-m hilserl_ray." in x]
    guide = [shape(x) for x in guide_commands()]
    assert len(guide) >= 10
    assert guide == journey, "\n".join(
        f"{'  ' if g == j else '!='} guide {g}  journey {j}" for g, j in zip(guide, journey, strict=False)
    )
    for line in guide_commands():
        assert line.startswith(".venv/bin/python -m hilserl_ray."), line
