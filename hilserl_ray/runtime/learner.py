"""The learner: a Ray actor that owns the SAC agent and the online/offline replay buffers.

Robot actors call `add_chunk` (Ray runs it on one of the actor's threads) while a background
thread trains at the configured UTD. Chunks arrive as read-only numpy views from the object
store; the buffers write them into `<output_dir>/replay/` (durable files, `buffer/store.py`)
and `add_chunk` returns, which acknowledges the chunk to its robot actor, only once they are
committed there: a learner killed at any moment comes back (restarted by the driver, or
`--resume`) with every acknowledged transition and the counters that go with them. So a
checkpoint holds only the agent, the update count, the RNG states and the position in the
stored data: small, and quick to write.

A write that finds the disk full ends storing for good: that chunk is not acknowledged, every
later one is refused with the same `DiskFull`, and `stats()` carries it to the driver, which
stops the run. The replay store keeps its last commit, so nothing acknowledged is lost.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import ray
import torch

from hilserl_ray.buffer import MixedSampler, ReplayBuffer
from hilserl_ray.buffer.offline import DatasetRows, OfflineBuffer
from hilserl_ray.config import TrainConfig
from hilserl_ray.data.convert import load_offline_datasets
from hilserl_ray.device import resolve_device
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.errors import DiskFull, deferred_init, disk_full_as
from hilserl_ray.fleet.stats import ArmStats, episode_summary
from hilserl_ray.policy import SACAgent
from hilserl_ray.policy.normalize import data_stats
from hilserl_ray.runtime.resume import CheckpointLoadError
from hilserl_ray.runtime.rundir import replay_dir

log = logging.getLogger(__name__)

EPISODE_WINDOW = 50  # episodes behind the "recent" success/return/intervention figures
DATA_COUNTERS = ("env_steps", "episodes", "intervention_steps")  # committed with the stored rows


def stored_state(counters: dict, recent: list[dict], arms: ArmStats) -> dict:
    """What the learner commits with the stored rows (the replay store's meta): its counters, the
    recent episodes overall and per arm; a restarted learner starts from it."""
    return {"counters": counters, "recent": recent, "arms": arms.state()}


class Learner:
    """Plain class (testable without Ray); `LearnerActor` below is its Ray actor."""

    def __init__(self, cfg_dict: dict, resume_from: str | None = None):
        self.cfg = cfg = TrainConfig.model_validate(cfg_dict)
        self.spec = spec = pipeline_spec(cfg)
        self.device = resolve_device(cfg.policy.device)
        torch.manual_seed(cfg.seed)
        if self.device.type == "cpu":
            torch.set_num_threads(
                max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
                if ray.is_initialized()
                else 1
            )
        offline = self._offline_data()
        # normalization from the spec; features it has no range for (a gym env's) from the demos
        self.agent = SACAgent(spec, cfg.policy, data_stats(spec, offline), device=self.device)
        datasets = [DatasetRows(spec, c, seed=cfg.seed + 10 + i) for i, c in enumerate(offline)]
        offline_rows = sum(len(c["is_last"]) for c in offline)
        cap = cfg.buffer.offline_capacity
        ring_cap = cap - offline_rows if isinstance(cap, int) else cfg.buffer.online_capacity
        replay = replay_dir(cfg.output_dir) if cfg.storage.durable else None
        with disk_full_as(cfg.output_dir, "creating the replay store"):
            self.online = ReplayBuffer(
                spec, cfg.buffer.online_capacity, self.device, cfg.seed, storage=replay and replay / "online"
            )
            ring = ReplayBuffer(
                spec, ring_cap, self.device, cfg.seed + 1, storage=replay and replay / "interventions"
            )
        self.offline = OfflineBuffer(ring, datasets, seed=cfg.seed + 3)
        self.sampler = MixedSampler(self.online, self.offline, cfg.buffer.online_ratio)

        # env_steps, episodes, intervention_steps and the recent episodes (overall and per arm) are
        # committed with the rows (they describe the stored data); so is the update count, which
        # never goes back: a learner restarted from an older checkpoint (or none) counts on from
        # it, so robots paced by env_steps_per_update step on at once instead of waiting while it
        # makes up the updates lost with the dead learner's agent.
        stored = self.online.meta
        self.counters = {"updates": 0, **dict.fromkeys(DATA_COUNTERS, 0), **stored.get("counters", {})}
        self.recent = collections.deque(stored.get("recent", []), maxlen=EPISODE_WINDOW)
        self.arms = ArmStats(EPISODE_WINDOW)
        self.arms.restore(stored.get("arms", {}))
        self.last_metrics: dict[str, float] = {}
        self._pending_metrics: dict[str, torch.Tensor] | None = None
        self._weights: tuple[int, ray.ObjectRef] | None = None
        self._lock = threading.Lock()  # agent + counters: updates vs checkpoint/ingest
        self._ingest = threading.Lock()  # one chunk at a time: dedup check, both buffers, counters
        self._stop = threading.Event()
        self._updates_per_s = 0.0
        self._disk_full: DiskFull | None = None  # a store write found no space: nothing more is stored
        if resume_from:
            try:
                self._restore(Path(resume_from))
            except Exception as e:  # the driver then tries the previous checkpoint
                cause = " ".join(str(e).split())[:300]
                raise CheckpointLoadError(
                    f"checkpoint {resume_from} cannot be loaded ({type(e).__name__}: {cause})"
                ) from e
        self._rate = (time.monotonic(), self.counters["updates"])  # a resumed run's rate starts at 0
        self._publish_weights()
        self._thread = threading.Thread(target=self._train_loop, name="learner-train", daemon=True)
        self._thread.start()
        self._syncer = threading.Thread(target=self._sync_loop, name="learner-sync", daemon=True)
        self._syncer.start()
        # After a restart the rows may not be in the page cache (reboot, other node): read them
        # in while training starts, rather than one random disk read per sampled row.
        self._prefetch = threading.Thread(target=self._prefetch_rows, name="learner-prefetch", daemon=True)
        self._prefetch.start()

    def _prefetch_rows(self) -> None:
        self.online.prefetch()
        self.offline.ring.prefetch()

    # ------------------------------------------------------------------------------ data
    def _offline_data(self) -> list[dict]:
        if not self.cfg.dataset.all_paths():
            return []
        return load_offline_datasets(self.cfg, self.spec, progress=self.cfg.logging.progress_bar)

    def add_chunk(
        self,
        chunk: dict[str, np.ndarray],
        episodes: list[dict] | None = None,
        source: tuple | None = None,
        arm: str | None = None,
    ) -> int:
        """Store K steps from a robot actor and its finished episodes; return env_steps.

        Returning is the acknowledgement: the rows and the counters are committed to the replay
        store by then. `source` = (sender, sequence number): a chunk sent again because its
        acknowledgement was lost (the learner died after storing it) is not stored twice, and a
        sender's stream with a gap does not link an episode across the gap. `arm`: the fleet arm
        it comes from (per-arm figures)."""
        episodes = list(episodes or [])
        with self._ingest:
            full = self._disk_full
            if full is not None:  # the commit stays as the last write that fitted left it
                raise DiskFull(full.directory, full.doing)
            if source is not None and self.online.is_stored(tuple(source)):
                return self.counters_now()["env_steps"]
            with self._lock:
                c = {k: self.counters[k] for k in DATA_COUNTERS}
                updates = self.counters["updates"]
                recent = [*self.recent, *episodes][-EPISODE_WINDOW:]
            c["env_steps"] += int((~chunk["is_last"]).sum())
            c["intervention_steps"] += int((chunk["is_intervention"] & ~chunk["is_last"]).sum())
            c["episodes"] += len(episodes)
            arms = ArmStats(EPISODE_WINDOW)
            with self._lock:
                arms.restore(self.arms.state())
            arms.add(arm, int((~chunk["is_last"]).sum()), episodes)
            src = tuple(source) if source is not None else None
            # Offline first: the online commit (with the counters) is the one that marks the chunk
            # stored; if the learner dies between the two, the chunk comes again and the offline
            # ring skips it by its own sequence number.
            with self._storing("storing replay rows"):
                self.offline.add_chunk(chunk, only_interventions=True, source=src)
                self.online.add_chunk(
                    chunk, source=src, meta=stored_state({**c, "updates": updates}, recent, arms)
                )
            with self._lock:
                self.counters.update(c)
                self.recent.extend(episodes)
                self.arms = arms
            return c["env_steps"]

    @contextlib.contextmanager
    def _storing(self, doing: str):
        """A replay-store write: one that finds the disk full is a DiskFull, kept for good."""
        try:
            with disk_full_as(self.cfg.output_dir, doing):
                yield
        except DiskFull as e:
            self._disk_full = self._disk_full or e
            raise

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.cfg.storage.sync_every_s):
            try:
                self.sync()
            except DiskFull:
                return  # `stats()` tells the driver, which stops the run

    def sync(self) -> None:
        """Flush the replay store to the disk: a power loss then costs nothing committed before."""
        with self._storing("flushing replay rows"):
            self.online.sync()
            self.offline.ring.sync()

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

    def _commit_counters(self) -> None:
        """Commit the counters as they are now (the update count moves between chunks): a count
        the driver has shown survives a kill -9, so a restarted learner never counts back."""
        if self._disk_full is not None:  # nothing more is stored; stats() reports why
            return
        with self._ingest:
            with self._lock:
                state = stored_state(dict(self.counters), list(self.recent), self.arms)
            if state["counters"] != self.online.meta.get("counters"):
                try:
                    with self._storing("storing the counters"):
                        self.online.commit_meta(state)
                except DiskFull:
                    return

    def stats(self) -> dict:
        self._commit_counters()  # before it is reported
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
        if self._disk_full is not None:
            s["disk_full"] = self._disk_full  # the driver stops the run with it
        return s

    # ------------------------------------------------------------------------ checkpoint
    def save(self, directory: str) -> dict:
        """Write the agent (+ optimizers, targets, temperature), counters, RNG states and the position
        in the stored data into `directory`; return the counters (with the training stall in s).

        The replay rows are already on disk (`<output_dir>/replay/`): they are flushed, not copied.
        No space for it: DiskFull."""
        with disk_full_as(self.cfg.output_dir, "writing a checkpoint"):
            return self._save(Path(directory))

    def _save(self, d: Path) -> dict:
        t0 = time.perf_counter()
        with self._lock:
            self.agent.save(d / "agent")
            counters = dict(self.counters)
            recent = list(self.recent)
            arms = self.arms.state()
            rng = {"online": self.online.rng_state, "offline": self.offline.rng_states()}
            position = {
                "online_written": self.online.written,
                "interventions_written": self.offline.ring.written,
            }
            torch_rng = torch.get_rng_state().numpy()
        stall = time.perf_counter() - t0
        state = {
            "counters": counters,
            "recent": recent,
            "rng": rng,
            "replay": position,
            "stall_s": stall,
            "arms": arms,
        }
        (d / "learner.json").write_text(json.dumps(state, indent=1, default=int))
        np.save(d / "torch_rng.npy", torch_rng)
        self.sync()  # a checkpoint never refers to rows a power loss could take
        return {**counters, "stall_s": stall, "arms": arms}

    def _restore(self, d: Path) -> None:
        self.agent = SACAgent.load(d / "agent", device=self.device, policy=self.cfg.policy)
        state = json.loads((d / "learner.json").read_text())
        self.counters["updates"] = max(self.counters["updates"], int(state["counters"]["updates"]))
        if not self.online.meta and state["counters"].get("env_steps"):
            # A checkpoint from before the replay store (buffers inside it), a deleted store, or
            # rows kept in RAM only (storage.durable=false).
            log.warning(
                "%s: no stored replay data for this run in %s; continuing with the agent and counters only",
                d,
                replay_dir(self.cfg.output_dir)
                if self.cfg.storage.durable
                else "RAM (storage.durable=false)",
            )
            self.counters.update({k: int(state["counters"].get(k, 0)) for k in DATA_COUNTERS})
            self.recent.extend(state.get("recent", []))
            self.arms.restore(state.get("arms", {}))
        if "rng" in state:
            self.online.rng_state = state["rng"]["online"]
            self.offline.set_rng_states(state["rng"]["offline"])
        torch.set_rng_state(torch.from_numpy(np.load(d / "torch_rng.npy")))

    def describe(self) -> dict:
        return {
            "pid": os.getpid(),
            "device": str(self.device),
            "updates": self.counters["updates"],
            "online": len(self.online),
            "offline": len(self.offline),
        }

    def counters_now(self) -> dict:
        with self._lock:
            return dict(self.counters)

    def stop(self) -> dict:
        """Stop training (the current update finishes), flush the store and return the counters."""
        self._stop.set()
        self._thread.join(timeout=60)
        self._syncer.join(timeout=60)
        with contextlib.suppress(DiskFull):  # kept: stats() reports it; the rows stay committed
            self.sync()
        return self.counters_now()

    def close(self) -> None:
        """Stop, and release the replay store (another learner may open it then)."""
        self.stop()
        self.online.close()
        self.offline.ring.close()


LearnerActor = ray.remote(max_concurrency=4)(deferred_init(Learner))
