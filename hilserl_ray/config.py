"""The whole run's configuration: typed pydantic models with their defaults and field docs.

This is the schema only. Every block forbids unknown keys, so a typo is an error (with a
suggestion, see `configio`; a key that moved names its new place, `MOVED_KEYS`). Rules that
involve more than one field are in `hilserl_ray.checks.config` (run by `configio.load_config`),
rules that need files on disk in `hilserl_ray.checks.files` / `.dataset`; a fleet's `robots`
list is expanded into per-arm configs by `hilserl_ray.fleet`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]

SIM_CAMERAS = ("gripper_cam", "front")


def _expand_user(v: object) -> object:
    return Path(v).expanduser() if isinstance(v, str | Path) and str(v).startswith("~") else v


# Every path a user writes: `~/data` means their home, in a config file as on the command line.
UserPath = Annotated[Path, BeforeValidator(_expand_user)]


class Strict(BaseModel):
    """Base for every block: unknown keys are errors, assignments are validated, inf/nan refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------- env
class CameraConfig(Strict):
    """A camera as the robot delivers it, before the pipeline crops/resizes it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$", description="feature key: observation.images.<name>")
    width: PositiveInt = 640
    height: PositiveInt = 480
    fps: PositiveFloat = 30.0
    device: int | str | None = Field(
        None, description="real robot only: OpenCV index or a stable path such as /dev/v4l/by-id/..."
    )


# env.gym.observation's default: the LeRobot / gym-hil keys ('*' maps every camera under pixels)
GYM_OBSERVATION = {
    "agent_pos": "observation.state",
    "environment_state": "observation.environment_state",
    "pixels.*": "observation.images.*",
}


class GymEnvConfig(Strict):
    """A registered gymnasium env (dict observations, a Box action) behind the pipeline: env.type gym.

    Its feature spec comes from its spaces (`hilserl_ray.gymenv.spaces`); the policy's action is
    continuous dims in [-1, 1] scaled onto the env's bounds, then the pipeline's gripper."""

    id: str = Field(description="registered id; its namespace (before '/') is imported if not registered yet")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to gymnasium.make")
    wrappers: list[str] = Field(
        default_factory=list,
        description="'module:Class' of gymnasium.Wrapper subclasses, each called with the env in order before its "
        "spaces are read; the policy and a 'module:function' expert see their observation (e.g. a measurement "
        "the env leaves out)",
    )
    observation: dict[str, str] = Field(
        default_factory=lambda: dict(GYM_OBSERVATION),
        description="env key ('pixels.front': a nested dict's key) -> feature name; every env key must be "
        "mapped, an entry the env lacks is skipped",
    )
    action_names: list[str] | None = Field(
        None, description="names of the continuous action dims; default action.0, action.1, ..."
    )
    gripper: Literal["none", "absolute", "delta", "discrete"] = Field(
        "none",
        description="what the env's last action dim is: no gripper, an absolute target, a rate, or "
        "close/stay/open at its low/middle/high value; the policy's gripper is pipeline.gripper's",
    )
    gripper_open: Literal["high", "low"] = Field("high", description="which end of that dim opens")
    gripper_step: Annotated[float, Field(gt=0, le=1)] = Field(
        0.3, description="absolute gripper, continuous policy gripper: fraction of the range per unit"
    )
    success_key: str = Field("is_success", description="info key of the env's success")
    expert: str | None = Field(
        None,
        description="'module:function' (native observation -> native action) or 'module:Class' (built "
        "with the env, called per step, reset per episode): the oracle and record's demonstrator",
    )


class EnvConfig(Strict):
    type: Literal["so101", "gym"] = Field(
        "so101", description="so101: the project's SO-101 (robot.type sim or so101); gym: env.gym"
    )
    gym: GymEnvConfig | None = None
    task: Literal["reach", "pick_cube"] = "pick_cube"
    fps: PositiveFloat = Field(10.0, description="control rate of the policy, Hz")
    max_episode_steps: PositiveInt = 100
    dense_reward: bool = Field(False, description="add a shaped distance reward to the sparse success")
    cameras: list[CameraConfig] = Field(default_factory=list)
    physics_substeps: PositiveInt | None = Field(
        None, description="sim only; default from the model's timestep"
    )
    reset_noise: Annotated[float, Field(ge=0)] = Field(
        0.02, description="sim: radians of joint noise at reset"
    )
    environment_state: bool | None = Field(
        None,
        description="sim only: add observation.environment_state (the target or cube xyz, privileged); "
        "None = only when there are no cameras (a state-only task cannot be solved without it)",
    )


# ------------------------------------------------------------------------------------ robot
class RobotConfig(Strict):
    type: Literal["sim", "so101"] = "sim"
    mjcf: UserPath | None = Field(
        None,
        description="MJCF used for kinematics (and the sim). Default: the project's primitive SO-101. "
        "Any model with the same joint names and a 'gripperframe' site works.",
    )
    port: str | None = Field(None, description="real robot: serial port of the follower bus")
    calibration: UserPath | None = Field(None, description="real robot: LeRobot-format calibration JSON")
    motor_ids: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    max_relative_target_deg: PositiveFloat = Field(10.0, description="largest joint move per step, degrees")
    reset_pose_deg: list[float] = Field(
        default_factory=lambda: [0.0, -20.0, 30.0, 70.0, 0.0, 30.0],
        description="joint pose (degrees, gripper 0..100 on the real arm) the reset ramps to",
    )
    reset_seconds: PositiveFloat = 2.0
    watchdog_seconds: PositiveFloat = Field(1.0, description="hold, then torque off, if no command arrives")
    watchdog_release_seconds: PositiveFloat = Field(
        10.0, description="torque off after this long without commands"
    )
    reset_wait_seconds: Annotated[float, Field(ge=0)] = Field(
        0.0, description="hold at the reset pose this long after the ramp (time to reset the scene)"
    )
    workspace_low: tuple[float, float, float] | None = Field(
        None, description="safety box for the end effector (FK of every target); default pipeline.ee_action's"
    )
    workspace_high: tuple[float, float, float] | None = None
    bus_timeout_ms: PositiveFloat = Field(
        50.0, description="extra wait for a servo reply beyond its bytes' time; raise for slow USB adapters"
    )


class ArmInterventionConfig(Strict):
    """An arm's own intervention device; fields left unset keep `pipeline.intervention`'s."""

    source: Literal["none", "oracle", "keyboard", "gamepad", "leader", "web"] | None = None
    leader_port: str | None = None
    leader_calibration: UserPath | None = None
    keys_url: str | None = Field(
        None, pattern=r"^https?://", description="this arm's keys over HTTP (see pipeline.intervention)"
    )


class ArmConfig(Strict):
    """One arm of a fleet: only what differs between arms. Everything else (task, robot safety
    limits, pipeline shapes, policy) is shared, so every arm feeds the one policy the same features."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="names the arm in logs and metrics")
    type: Literal["sim", "so101"] | None = Field(None, description="default: robot.type")
    label: str | dict[str, str] | None = Field(
        None,
        description="node label the arm's actor is placed on: 'arm1' means {<key of ray.robot_label>: arm1}; "
        "default: that key = the arm's name for a real arm, anywhere for a sim arm",
    )
    resource: str | None = Field(
        None,
        description="custom resource the actor takes, so one actor owns the arm; default "
        "<ray.robot_resource>_<name> when the arm is placed by label",
    )
    port: str | None = Field(None, description="real arm: the follower's serial port (default robot.port)")
    calibration: UserPath | None = Field(
        None, description="real arm: calibration JSON (default robot.calibration)"
    )
    cameras: dict[str, int | str] = Field(
        default_factory=dict, description="camera name (from env.cameras) -> this arm's device"
    )
    crop: dict[str, tuple[int, int, int, int]] | None = Field(
        None, description="this arm's crops (top, left, height, width); default pipeline.image.crop"
    )
    intervention: ArmInterventionConfig = Field(default_factory=ArmInterventionConfig)


# --------------------------------------------------------------------------------- pipeline
class EEActionConfig(Strict):
    """End-effector delta control: (dx, dy, dz[, gripper]) in [-1, 1] solved by IK."""

    enabled: bool = True
    step_size_m: PositiveFloat = Field(0.02, description="metres per unit action per step")
    max_step_m: PositiveFloat = Field(
        0.03,
        description="largest EE jump per step: the target is never farther than this from the measured EE",
    )
    max_lag_m: Annotated[float, Field(ge=0)] = Field(
        0.02,
        description="steps add to the last commanded target, not the measured EE, while the measured "
        "EE lags it (gravity sag of a soft position servo) by up to this; a larger lag (contact, a "
        "blocked arm) is cut to this, so the target never winds up; 0: steps from the measured EE",
    )
    lag_keep: Annotated[float, Field(ge=0, le=1)] = Field(
        0.7,
        description="fraction of that lag carried into the next step: a stalled arm is pushed up to "
        "1/(1-lag_keep) steps ahead; 1 integrates fully (a closed-loop controller such as the oracle "
        "then overshoots and hunts), 0 steps from the measured EE",
    )
    workspace_low: tuple[float, float, float] = (0.10, -0.25, 0.01)
    workspace_high: tuple[float, float, float] = (0.42, 0.25, 0.30)
    point_down: bool = Field(
        True, description="IK keeps the fingers pointing down (roll free); false: position-only IK"
    )


class GripperConfig(Strict):
    discrete: bool = Field(True, description="close/stay/open as a separate discrete action (HIL-SERL)")
    penalty: float = Field(-0.02, le=0, description="reward added when the gripper flips state")
    step_deg: PositiveFloat = Field(30.0, description="continuous mode: degrees per unit action")
    command_threshold: Annotated[float, Field(ge=0)] = Field(
        5.0,
        description="discrete mode, from joint targets (leader arm, LeRobot datasets): a commanded change "
        "of the gripper (0..100) larger than this opens/closes, a smaller one stays",
    )


class ProprioConfig(Strict):
    """Full proprioception from joint positions via MuJoCo FK: 6 + 6 + 3 + 3 = 18."""

    joint_velocity: bool = True
    ee_pose: bool = True


class ImageConfig(Strict):
    """Crop (optional, per camera) and resize (always). Independent steps."""

    size: tuple[PositiveInt, PositiveInt] = Field((128, 128), description="(height, width) after resize")
    crop: dict[str, tuple[int, int, int, int]] = Field(
        default_factory=dict, description="camera -> (top, left, height, width) in the raw image"
    )


class OracleConfig(Strict):
    """The scripted 'human': an IK expert that takes over by a rule, so HIL runs without a person."""

    episode_probability: Annotated[float, Field(ge=0, le=1)] = 0.3
    stuck_steps: PositiveInt | None = Field(20, description="take over after N steps without progress")
    noise: Annotated[float, Field(ge=0)] = 0.1
    decay_episodes: int | None = Field(
        None, ge=1, description="scale the takeover probability down linearly over N episodes"
    )
    takeover_steps: PositiveInt | None = Field(
        None,
        description="hand control back to the policy after N steps of a takeover, as a person corrects and lets "
        "go (the policy then acts in the later phases of the task too); null: the expert keeps it to the episode's end",
    )


# sources whose actions are end-effector deltas only (the leader's go through joint_targets_to_action)
EE_ONLY_SOURCES = ("oracle", "keyboard", "gamepad")


class InterventionConfig(Strict):
    source: Literal["none", "oracle", "keyboard", "gamepad", "leader", "web"] = Field(
        "none",
        description="web: only the console page (it is added to any other source while console.enabled)",
    )
    oracle: OracleConfig = Field(default_factory=OracleConfig)
    leader_port: str | None = None
    leader_calibration: UserPath | None = None
    leader_divergence_deg: PositiveFloat = Field(15.0, description="leader: auto-engage when arms diverge")
    keys_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="keyboard/leader keys: None = this machine's keyboard (pynput); else an HTTP URL "
        "streaming 'press <key>' / 'release <key>' lines (a keyboard elsewhere, the twin's scripted human)",
    )


class RewardConfig(Strict):
    """Success (reward 1, episode end) from a trained image classifier instead of the env's reward.

    `python -m hilserl_ray.reward train` makes the directory. The human's success/failure keys
    still win over it; every disagreement is counted (and saved when `disagreements_dir` is set).
    """

    classifier: UserPath | None = Field(
        None, description="directory written by `python -m hilserl_ray.reward train`; None = the env's reward"
    )
    threshold: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="probability at or above which a frame counts as success; None = the model's own"
    )
    consecutive_frames: PositiveInt = Field(1, description="success needs this many frames in a row")
    max_gripper: Annotated[float, Field(ge=0, le=100)] | None = Field(
        None, description="state check AND-ed with the classifier: gripper.pos <= this (jaws closed on it)"
    )
    min_ee_height_m: float | None = Field(
        None, description="state check AND-ed with the classifier: ee.z >= this (needs proprio.ee_pose)"
    )
    disagreements_dir: UserPath | None = Field(
        None, description="save frames where the human's key contradicts the classifier, as new labels"
    )


class PipelineConfig(Strict):
    """The one observation/action pipeline: it defines every feature name and shape."""

    ee_action: EEActionConfig = Field(default_factory=EEActionConfig)
    gripper: GripperConfig = Field(default_factory=GripperConfig)
    proprio: ProprioConfig = Field(default_factory=ProprioConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    intervention: InterventionConfig = Field(default_factory=InterventionConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)


# ----------------------------------------------------------------------------------- policy
class PolicyConfig(Strict):
    """SAC as in HIL-SERL/RLPD. Defaults follow the published HIL-SERL settings."""

    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$", description="'auto', 'cpu', 'cuda' or 'cuda:N'"
    )
    batch_size: PositiveInt = 256
    utd_ratio: PositiveInt = Field(2, description="critic updates per actor update")
    discount: Annotated[float, Field(gt=0, le=1)] = 0.97
    tau: Annotated[float, Field(gt=0, le=1)] = 0.005
    actor_lr: PositiveFloat = 3e-4
    critic_lr: PositiveFloat = 3e-4
    temperature_lr: PositiveFloat = 3e-4
    temperature_init: PositiveFloat = 1e-2
    target_entropy: float | None = Field(None, description="default -|A|/2")
    num_critics: PositiveInt = 2
    num_subsample_critics: PositiveInt | None = Field(None, description="REDQ: min over this many")
    hidden_dims: list[PositiveInt] = Field(default_factory=lambda: [256, 256])
    latent_dim: PositiveInt = 256
    encoder: Literal["conv", "pretrained"] = "conv"
    encoder_weights: UserPath | None = Field(
        None, description="local weights for the frozen pretrained encoder"
    )
    image_head: Literal["spatial_embedding", "spatial_softmax"] = "spatial_embedding"
    drq_pad: Annotated[int, Field(ge=0)] = 4
    grad_clip: PositiveFloat = 40.0
    compile: bool = Field(False, description="torch.compile the loss computations (slow first update)")
    bf16: bool = Field(False, description="bf16 autocast: CUDA whole forward; CPU the conv encoder only")


# ---------------------------------------------------------------------------- data, buffers
class BufferConfig(Strict):
    online_capacity: PositiveInt = 100_000
    offline_capacity: PositiveInt | Literal["auto"] = Field(
        "auto",
        description="offline rows: the dataset's (read in place) + a ring for online interventions; "
        "'auto' = the dataset's + online_capacity",
    )
    online_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        0.5, description="RLPD: online share of a batch"
    )


class DatasetConfig(Strict):
    """Offline LeRobot v2.1/v3.0 datasets in local directories (demos, interventions).

    `python -m hilserl_ray.data.inspect DIR --config X` shows what a dataset holds and the
    overrides that make it fit a config.
    """

    path: UserPath | None = None
    paths: list[UserPath] = Field(
        default_factory=list,
        description="several datasets, all into the offline buffer (with or without path)",
    )
    missing_reward: Literal["zero", "success_last_frame"] = "success_last_frame"
    rename: dict[str, str] = Field(default_factory=dict, description="dataset key -> pipeline feature name")
    cache: bool = True
    cache_dir: UserPath | None = Field(
        None,
        description="where converted datasets are cached, keyed by dataset content and pipeline, shared by "
        "runs; default $HILSERL_RAY_CACHE_DIR or ~/.cache/hilserl_ray/offline",
    )
    action_format: Literal["auto", "pipeline", "joint_targets", "joint_deltas"] = Field(
        "auto",
        description="the dataset's `action`: the pipeline's own (EE or joint deltas in [-1, 1] + gripper), "
        "absolute joint targets (what LeRobot teleop records), or joint deltas in state units; auto decides "
        "from meta/info.json names and meta/stats.json ranges",
    )
    joint_units: Literal["auto", "degrees", "lerobot_range"] = Field(
        "auto",
        description="units of the 6 joints in the dataset: degrees (gripper 0..100), or LeRobot's "
        "default -100..100 (recorded with use_degrees=False; converted with robot.calibration); auto "
        "decides from the value ranges and the calibration, and stops when it cannot",
    )

    def all_paths(self) -> list[Path]:
        """`path` then `paths`, each once."""
        out: list[Path] = []
        for p in ([self.path] if self.path is not None else []) + list(self.paths):
            if p not in out:
                out.append(p)
        return out


# ---------------------------------------------------------------------------------- runtime
class LearnerConfig(Strict):
    num_gpus: Annotated[float, Field(ge=0)] = 0
    training_starts: Annotated[int, Field(ge=0)] = Field(500, description="online transitions before updates")
    weights_every: PositiveInt = Field(20, description="publish weights every N updates")


class ActorsConfig(Strict):
    num_robot_actors: PositiveInt = Field(1, description="sim without `robots`: this many copies of `robot`")
    chunk_size: PositiveInt = Field(64, description="transitions per call to the learner")
    max_pending_chunks: PositiveInt = Field(
        8, description="chunks a robot actor sends ahead of the learner's acknowledgements"
    )
    env_steps_per_update: PositiveFloat | None = Field(
        None,
        description="sim: robot actors pause when this many env steps ahead of the learner's updates "
        "(fixed data per update, as synchronous SAC); null = free-running, as a real arm must be",
    )
    max_restarts: int = Field(
        3, ge=-1, description="restarts of a failing robot actor before it is dead for good (-1: no limit)"
    )
    on_robot_failure: Literal["continue", "stop"] = Field(
        "continue",
        description="a robot actor dead for good (restarts used up): train on with the other arms, or stop "
        "the run (robots stopped safely, final checkpoint, exit 1)",
    )
    start_timeout_s: PositiveFloat = Field(
        180.0, description="a robot actor not constructed (env, arm, cameras) by then ends the start"
    )
    no_step_timeout_s: PositiveFloat = Field(
        300.0,
        description="no env step from any robot actor for this long ends the run (never a silent stall); "
        "time paused from the console does not count",
    )


# keys that moved: the old place -> the new one (an old key is an error naming its new place)
MOVED_KEYS = {
    "learner.max_pending_chunks": "actors.max_pending_chunks",
    "learner.env_steps_per_update": "actors.env_steps_per_update",
}


class CheckpointConfig(Strict):
    every_updates: PositiveInt = 1000
    keep_last: PositiveInt = 3


class StorageConfig(Strict):
    """Replay rows live in `<output_dir>/replay/`, written as they arrive (buffer/store.py)."""

    durable: bool = Field(
        True,
        description="false: replay rows in RAM only, for sim fleets that send more than the disk "
        "takes (two 128x128 cameras: ~98 KB per transition); a learner restart or a resume starts "
        "with an empty online buffer",
    )

    sync_every_s: PositiveFloat = Field(
        5.0,
        description="flush stored rows to the disk this often (and at each checkpoint): what a power loss "
        "can cost at most; a killed process loses nothing acknowledged either way",
    )


class LoggingConfig(Strict):
    every_seconds: PositiveFloat = 10.0
    tensorboard: bool = True
    progress_bar: bool = Field(
        True, description="progress bars on long work (dataset conversion, record, evaluate)"
    )
    sounds: bool = Field(
        False, description="short beeps on the console page at episode start, end and takeover"
    )


class ConsoleConfig(Strict):
    """The operator's page in a browser, served by each robot actor (and by record / evaluate).

    Bound to `host` with a random token in the printed URL; from another machine use an SSH tunnel
    (`ssh -L PORT:127.0.0.1:PORT robot-host`), as for the Ray dashboard."""

    enabled: bool = True
    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 exposes it (the token still guards it)")
    port: int = Field(0, ge=0, le=65535, description="0 = a free port (one page per robot actor)")
    fps: PositiveFloat = Field(5.0, le=30, description="camera frames per second sent to the page")
    jpeg_quality: int = Field(80, ge=10, le=100)


class RayConfig(Strict):
    address: str | None = Field(None, description="None: RAY_ADDRESS / job context, else a local Ray")
    num_cpus: PositiveInt | None = None
    robot_label: dict[str, str] = Field(default_factory=lambda: {"robot": "so101"})
    robot_resource: str = "so101"
    dashboard_host: str = "127.0.0.1"
    include_dashboard: bool = False


class TrainConfig(Strict):
    """One run. `output_dir` receives config.yaml, metrics, checkpoints and caches."""

    name: str = "run"
    output_dir: UserPath = Path("outputs/run")
    seed: int = 0
    total_env_steps: PositiveInt = 20_000
    shutdown_timeout_s: PositiveFloat = 30.0
    env: EnvConfig = Field(default_factory=EnvConfig)
    robot: RobotConfig = Field(default_factory=RobotConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    actors: ActorsConfig = Field(default_factory=ActorsConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    robots: list[ArmConfig] = Field(
        default_factory=list,
        description="a fleet: one robot actor per entry, each on its own node. Empty: `robot` alone "
        "(or actors.num_robot_actors copies of it in the sim)",
    )

    @field_validator("output_dir", mode="before")
    @classmethod
    def _output_dir_named(cls, v: object) -> object:
        if isinstance(v, str) and not v.strip():
            raise ValueError(
                "an empty path would mean the current directory; name a directory (outputs/<name>)"
            )
        return v
