"""The learner: a Ray actor that owns the SAC agent and the online/offline replay buffers.

Robot actors call `add_chunk` (Ray runs it on one of the actor's threads) while a background
thread trains at the configured UTD. Chunks arrive as read-only numpy views from the object
store; the buffer copies them into its own preallocated storage, so a chunk counts as stored
only once the learner holds it, whatever happens to the robot actor that sent it.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import ray
import torch

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.errors import UserError, deferred_init
from hilserl_ray.fleet.stats import ArmStats, episode_summary

log = logging.getLogger(__name__)

EPISODE_WINDOW = 50  # episodes behind the "recent" success/return/intervention figures


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"got {name!r}, but torch sees no CUDA device on this node",
            where="policy.device",
            fix="--policy.device=cpu (or auto), or run the learner on a GPU node (learner.num_gpus)",
        )
    return name


class Learner:
    """Plain class (testable without Ray); `LearnerActor` below is its Ray actor."""

    def __init__(self, cfg_dict: dict, resume_from: str | None = None):
        from hilserl_ray.buffer import MixedSampler, ReplayBuffer
        from hilserl_ray.policy import SACAgent

        self.cfg = cfg = TrainConfig.model_validate(cfg_dict)
        self.spec = spec = pipeline_spec(cfg)
        self.device = resolve_device(cfg.policy.device)
        torch.manual_seed(cfg.seed)
        if self.device == "cpu":
            torch.set_num_threads(
                max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
                if ray.is_initialized()
                else 1
            )
        offline = self._offline_data()
        self.agent = SACAgent(spec, cfg.policy, device=self.device)  # normalization from the spec
        offline_rows = sum(len(c["is_last"]) for c in offline)
        cap = cfg.buffer.offline_capacity
        offline_cap = cap if isinstance(cap, int) else offline_rows + cfg.buffer.online_capacity
        self.online = ReplayBuffer(spec, cfg.buffer.online_capacity, device=self.device, seed=cfg.seed)
        self.offline = ReplayBuffer(spec, offline_cap, device=self.device, seed=cfg.seed + 1)
        for chunk in offline:  # one chunk per dataset
            self.offline.add_chunk(chunk)
        self.sampler = MixedSampler(self.online, self.offline, cfg.buffer.online_ratio)

        self.counters = {"updates": 0, "env_steps": 0, "episodes": 0, "intervention_steps": 0}
        self.recent = collections.deque(maxlen=EPISODE_WINDOW)
        self.arms = ArmStats(EPISODE_WINDOW)
        self.last_metrics: dict[str, float] = {}
        self._pending_metrics: dict[str, torch.Tensor] | None = None
        self._weights: tuple[int, ray.ObjectRef] | None = None
        self._lock = threading.Lock()  # agent + counters: updates vs checkpoint/ingest
        self._stop = threading.Event()
        self._rate = (time.monotonic(), 0)
        self._updates_per_s = 0.0
        if resume_from:
            try:
                self._restore(Path(resume_from))
            except Exception as e:  # the driver then tries the previous checkpoint
                from hilserl_ray.runtime.resume import CheckpointLoadError

                cause = " ".join(str(e).split())[:300]
                raise CheckpointLoadError(
                    f"checkpoint {resume_from} cannot be loaded ({type(e).__name__}: {cause})"
                ) from e
        self._publish_weights()
        self._thread = threading.Thread(target=self._train_loop, name="learner-train", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ data
    def _offline_data(self) -> list[dict]:
        if not self.cfg.dataset.all_paths():
            return []
        from hilserl_ray.data.convert import load_offline_datasets

        return load_offline_datasets(self.cfg, self.spec, progress=self.cfg.logging.progress_bar)

    def add_chunk(
        self, chunk: dict[str, np.ndarray], episodes: list[dict] | None = None, arm: str | None = None
    ) -> int:
        """Store K steps from a robot actor (a copy: the sender may die) and its finished episodes."""
        self.sampler.add_chunk(chunk)
        steps = int((~chunk["is_last"]).sum())
        with self._lock:
            self.counters["env_steps"] += steps
            self.counters["intervention_steps"] += int((chunk["is_intervention"] & ~chunk["is_last"]).sum())
            for ep in episodes or []:
                self.counters["episodes"] += 1
                self.recent.append(ep)
            self.arms.add(arm, steps, episodes or [])
            return self.counters["env_steps"]

    # -------------------------------------------------------------------------- training
    def _train_loop(self) -> None:
        cfg = self.cfg
        while not self._stop.is_set():
            if self.counters["env_steps"] < cfg.learner.training_starts or len(self.online) == 0:
                self._stop.wait(0.05)
                continue
            batches = [self.sampler.sample(cfg.policy.batch_size) for _ in range(cfg.policy.utd_ratio)]
            with self._lock:
                self._pending_metrics = self.agent.update(batches)
                self.counters["updates"] += 1
                updates = self.counters["updates"]
            if updates % cfg.learner.weights_every == 0:
                self._publish_weights()

    def _publish_weights(self) -> None:
        with self._lock:
            state = self.agent.actor_state()
            version = self.counters["updates"]
        self._weights = (version, ray.put(state) if ray.is_initialized() else state)

    def get_weights(self, have_version: int = -1):
        """Newest actor weights as (version, [ObjectRef]) if newer than `have_version`, else None."""
        w = self._weights
        if w is None or w[0] <= have_version:
            return None
        return w[0], [w[1]]

    def stats(self) -> dict:
        with self._lock:
            s = dict(self.counters)
            pending, self._pending_metrics = self._pending_metrics, None
        if pending is not None:  # the only host sync: once per driver poll
            self.last_metrics = {k: float(v) for k, v in pending.items()}
        now = time.monotonic()
        t0, u0 = self._rate
        if now - t0 >= 1.0:
            self._updates_per_s = (s["updates"] - u0) / (now - t0)
            self._rate = (now, s["updates"])
        s["updates_per_s"] = self._updates_per_s
        s["online_size"] = len(self.online)
        s["offline_size"] = len(self.offline)
        with self._lock:
            recent = list(self.recent)
            s.update(self.arms.summary())
        s.update(episode_summary(recent))
        judged = [e for e in recent if "classifier_prob_max" in e]
        if judged:  # reward classifier: its successes vs the env's own (sim ground truth)
            s["env_success_rate"] = float(np.mean([e["env_success"] for e in judged]))
            s["classifier_prob_max"] = float(np.mean([e["classifier_prob_max"] for e in judged]))
            s["classifier_disagreements"] = float(sum(e["classifier_disagreements"] for e in judged))
        s.update({f"loss/{k}": v for k, v in self.last_metrics.items()})
        return s

    # ------------------------------------------------------------------------ checkpoint
    def save(self, directory: str) -> dict:
        """Write agent (+ optimizers, targets, temperature), buffers, counters and RNG into `directory`."""
        d = Path(directory)
        with self._lock:
            self.agent.save(d / "agent")
            if self.cfg.checkpoint.save_buffers:
                self.online.save(d / "online")
                self.offline.save(d / "offline")
            counters = dict(self.counters)
            (d / "learner.json").write_text(
                json.dumps(
                    {"counters": counters, "recent": list(self.recent), "arms": self.arms.state()}, indent=1
                )
            )
            np.save(d / "torch_rng.npy", torch.get_rng_state().numpy())
        return counters

    def _restore(self, d: Path) -> None:
        from hilserl_ray.buffer import MixedSampler, ReplayBuffer
        from hilserl_ray.policy import SACAgent

        self.agent = SACAgent.load(d / "agent", device=self.device)
        if (d / "online").is_dir():
            self.online = ReplayBuffer.load(d / "online", device=self.device, spec=self.spec)
            self.offline = ReplayBuffer.load(d / "offline", device=self.device, spec=self.spec)
            self.sampler = MixedSampler(self.online, self.offline, self.cfg.buffer.online_ratio)
        state = json.loads((d / "learner.json").read_text())
        self.counters.update(state["counters"])
        self.recent.extend(state.get("recent", []))
        self.arms.restore(state.get("arms", {}))
        torch.set_rng_state(torch.from_numpy(np.load(d / "torch_rng.npy")))

    def describe(self) -> dict:
        return {
            "pid": os.getpid(),
            "device": str(self.device),
            "online": len(self.online),
            "offline": len(self.offline),
        }

    def counters_now(self) -> dict:
        with self._lock:
            return dict(self.counters)

    def stop(self) -> dict:
        """Stop training (the current update finishes) and return the counters."""
        self._stop.set()
        self._thread.join(timeout=60)
        return self.counters_now()


LearnerActor = ray.remote(max_concurrency=4)(deferred_init(Learner))
