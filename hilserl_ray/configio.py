"""Loading a `TrainConfig`: YAML + dotted command-line overrides, the static checks, readable errors.

Every problem is collected and reported at once as `path: got X; allowed Y`, with the closest
valid key for typos: the schema's field errors and the static rules (`checks.config`) together.
`ConfigError` (hilserl_ray.errors) carries those lines; the CLI prints them and exits 2.
"""

from __future__ import annotations

import copy
import difflib
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hilserl_ray.checks.config import config_problems
from hilserl_ray.config import MOVED_KEYS, TrainConfig
from hilserl_ray.errors import ConfigError  # (re-exported: callers import it from here)

# The override of commands that fill no replay buffer (record, evaluate): the rule on how the
# buffers mix (buffer.online_ratio against the intervention source) is training's.
NO_BUFFER_MIX = ["--buffer.online_ratio=1.0"]


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--policy.batch_size=128` or `--policy.batch_size 128` -> {"policy.batch_size": 128}."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--") or len(a) <= 2:
            raise ConfigError(
                "command line", [f"'{a}': expected --dotted.key=value (e.g. --policy.batch_size=128)"]
            )
        key, eq, raw = a[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError("command line", [f"--{key}: no value given (use --{key}=VALUE)"])
            i += 1
            raw = args[i]
        out[key] = yaml.safe_load(raw) if raw != "" else ""
        i += 1
    return out


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    for dotted, value in overrides.items():
        node: Any = data
        parts = dotted.split(".")
        for j, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[_list_index(node, part, parts[: j + 1])]
                continue
            if not isinstance(node.get(part), dict | list):
                node[part] = {}
            node = node[part]
        last = parts[-1]
        if isinstance(node, list):
            node[_list_index(node, last, parts)] = value
        else:
            node[last] = value
    return data


def _list_index(node: list, part: str, path: list[str]) -> int:
    if not node:
        parent = ".".join(path[:-1])
        raise ConfigError(
            "command line",
            [f"{'.'.join(path)}: {parent} is an empty list; give it whole (--{parent}='[...]')"],
        )
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError("command line", [f"{'.'.join(path)}: a list index 0..{len(node) - 1} was expected"])
    return int(part)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error, not a silent overwrite."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice (first on line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "config.yaml"
    saved = (path.parent / "checkpoints").is_dir()  # a run's own config, written by `write_config`
    if not path.exists():
        raise ConfigError(str(path), ["the config file does not exist"])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["not a text file (not UTF-8): pass a YAML config"]) from None
    except OSError as e:
        raise ConfigError(str(path), [f"cannot be read ({e.strerror})"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise ConfigError(str(path), [f"not valid YAML: {e}"]) from None
    if data is None:
        raise ConfigError(str(path), ["the file is empty (or only comments); start from configs/*.yaml"])
    if not isinstance(data, dict):
        raise ConfigError(str(path), [f"the top level must be a mapping, got {type(data).__name__}"])
    return migrate_moved_keys(data) if saved else data


def migrate_moved_keys(data: dict) -> dict:
    """A config this program wrote before a key moved (a run's config.yaml, a classifier's
    metadata) reads the old key as the new one; a hand-written config is told to move it."""
    for old, new in MOVED_KEYS.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        section = data.get(old_section)
        if isinstance(section, dict) and old_key in section:
            data.setdefault(new_section, {}).setdefault(new_key, section.pop(old_key))
    return data


def load_config(
    path: Path | str | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> TrainConfig:
    data = load_yaml(Path(path)) if path is not None else {}
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    data = apply_overrides(data, overrides or {})
    return validate(data, source=str(path) if path else "defaults")


def validate(data: dict, source: str = "config") -> TrainConfig:
    """The config `data` describes, or one `ConfigError` with every field and static problem."""
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as e:
        lines = format_errors(e)
        # The static rules need a whole config. To report every problem at once, drop the bad
        # values (their defaults stand in) and check the rest too.
        pruned = copy.deepcopy(data)
        for err in e.errors():
            _drop(pruned, list(err["loc"]))
        try:
            rest = [p.line() for p in config_problems(TrainConfig.model_validate(pruned))]
        except ValidationError as e2:
            rest = format_errors(e2)
        lines += [line for line in rest if line not in lines]
        raise ConfigError(source, lines) from None
    problems = config_problems(cfg)
    if problems:
        raise ConfigError.of(source, problems)
    return cfg


def _drop(data: Any, loc: list) -> None:
    """Remove the value at `loc`; inside a list, remove the whole list (its default stands in)."""
    node, parent, key = data, None, None
    for part in loc:
        if isinstance(node, dict):
            parent, key = node, part
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
    if parent is not None:
        parent.pop(key, None)


def format_errors(e: ValidationError) -> list[str]:
    lines = []
    for err in e.errors():
        loc = [str(p) for p in err["loc"]]
        path = ".".join(loc)
        if err["type"] == "extra_forbidden" and path in MOVED_KEYS:
            lines.append(f"{path}: moved to {MOVED_KEYS[path]}; set it there")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key{_suggest(loc)}")
        elif err["type"] == "missing":
            lines.append(f"{path}: required, but missing")
        else:
            lines.append(f"{path}: got {err.get('input')!r}; {err['msg'][0].lower() + err['msg'][1:]}")
    return lines


def _suggest(loc: list[str]) -> str:
    fields = _fields_at(TrainConfig, loc[:-1])
    if not fields:
        return ""
    close = difflib.get_close_matches(loc[-1], fields, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{hint} valid keys here: {', '.join(sorted(fields))}"


def _fields_at(model: type, loc: list[str]) -> list[str]:
    """The field names of the model found by walking `loc` (through lists, dicts, optionals)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if part not in tp.model_fields:
                return []
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    """Optional[X] / X | None / Annotated[X, ...] -> X (the first model-like member)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[0]
        else:
            return tp


def to_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def write_config(cfg: TrainConfig, path: Path) -> None:
    """Write atomically: a crash mid-write never leaves a half config.yaml behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config.", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(to_yaml(cfg))
    os.replace(tmp, path)
