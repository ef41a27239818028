"""What a classifier was trained on, and the start-up check that the pipeline still gives exactly that.

A classifier directory holds `model.safetensors` and `classifier.json`. The JSON names the image
features it reads (name, shape, dtype), the image settings that shape their values (crop,
resize) with a fingerprint of both, the whole pipeline's fingerprint (for the record) and the
chosen threshold. No torch here: the file checks (`checks.files`) read it before Ray starts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from safetensors import safe_open

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.errors import Problem
from hilserl_ray.features import FeatureSpec

META_FILE = "classifier.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def input_spec(cfg: TrainConfig, cameras: list[str] | None = None) -> FeatureSpec:
    """The pipeline's spec reduced to the cameras the classifier reads (all by default)."""
    spec = pipeline_spec(cfg)
    keys = spec.image_keys
    if cameras:
        wanted = [f"observation.images.{c}" for c in cameras]
        unknown = [c for c, k in zip(cameras, wanted, strict=True) if k not in keys]
        if unknown:
            raise ValueError(
                f"cameras {unknown} are not in the pipeline; it has {[k.split('.')[-1] for k in keys]}"
            )
        keys = wanted
    if not keys:
        raise ValueError("env.cameras: the reward classifier needs at least one camera")
    return replace(spec, observation={k: spec.observation[k] for k in keys})


def input_description(spec: FeatureSpec, cfg: TrainConfig) -> dict:
    """The part of the pipeline that decides the classifier's input values, as JSON."""
    image = cfg.pipeline.image.model_dump(mode="json")
    cams = {k.split(".")[-1] for k in spec.image_keys}
    return {
        "features": {k: spec.to_dict()["observation"][k] for k in spec.image_keys},
        "image": {"size": image["size"], "crop": {c: b for c, b in image["crop"].items() if c in cams}},
    }


def fingerprint(description: dict) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def classifier_meta(cfg: TrainConfig, spec: FeatureSpec, threshold: float, **extra) -> dict:
    """The JSON saved next to the weights: input features + fingerprints, encoder settings,
    threshold, and the training config (evaluate converts datasets with it)."""
    desc = input_description(spec, cfg)
    p = cfg.policy
    return {
        "format_version": FORMAT_VERSION,
        "threshold": float(threshold),
        "input": desc,
        "input_fingerprint": fingerprint(desc),
        "pipeline_fingerprint": pipeline_spec(cfg).fingerprint(),
        "spec": spec.to_dict(),
        "policy": {"encoder": p.encoder, "image_head": p.image_head, "latent_dim": p.latent_dim},
        "config": cfg.model_dump(mode="json"),
        **extra,
    }


def read_meta(directory: Path) -> dict:
    """classifier.json of a classifier directory; ValueError naming the file when unusable."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise ValueError(f"{directory}: no {META_FILE} (make one with python -m hilserl_ray.reward train)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}"
        )
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"{directory}: no {WEIGHTS_FILE} next to {META_FILE}")
    try:  # the header and every tensor's extent, not the data: a cut or garbled file shows here
        with safe_open(weights, "np"):
            pass
    except Exception as e:
        raise ValueError(
            f"{weights}: not a complete safetensors file ({' '.join(str(e).split())[:160]}); "
            "copy it again or train the classifier again (python -m hilserl_ray.reward train)"
        ) from e
    return meta


def spec_problems(meta: dict, cfg: TrainConfig, key: str = "pipeline.reward.classifier") -> list[Problem]:
    """Every way this config's pipeline differs from what the classifier was trained on, by name."""
    trained = meta["input"]
    cams = [k.split(".")[-1] for k in trained["features"]]
    try:
        now = input_description(input_spec(cfg, cams), cfg)
    except ValueError as e:
        return [Problem(key, str(meta.get("directory", "")), f"a classifier for this pipeline: {e}")]
    problems: list[Problem] = []
    fix = (
        "retrain it for this config (python -m hilserl_ray.reward train --config ...) or restore the setting"
    )
    for name, f in trained["features"].items():
        got = now["features"][name]
        if (f["shape"], f["dtype"]) != (got["shape"], got["dtype"]):
            problems.append(
                Problem(
                    f"{key} ({name})",
                    f"{got['shape']} {got['dtype']}",
                    f"the classifier was trained on {f['shape']} {f['dtype']}; {fix}",
                )
            )
    if trained["image"]["size"] != now["image"]["size"]:
        problems.append(
            Problem(
                "pipeline.image.size",
                now["image"]["size"],
                f"the classifier was trained at {trained['image']['size']}; {fix}",
            )
        )
    if trained["image"]["crop"] != now["image"]["crop"]:
        problems.append(
            Problem(
                "pipeline.image.crop",
                now["image"]["crop"],
                f"the classifier was trained with {trained['image']['crop']}; {fix}",
            )
        )
    if not problems and fingerprint(now) != meta["input_fingerprint"]:
        problems.append(
            Problem(key, fingerprint(now), f"input fingerprint {meta['input_fingerprint']}; {fix}")
        )
    return problems


def check_classifier(cfg: TrainConfig) -> list[Problem]:
    """Preflight: the configured classifier exists, is readable and fits this pipeline."""
    directory = cfg.pipeline.reward.classifier
    if directory is None:
        return []
    try:
        meta = read_meta(Path(directory))
    except ValueError as e:
        return [Problem("pipeline.reward.classifier", str(directory), str(e))]
    return spec_problems(meta, cfg)
