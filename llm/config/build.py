"""Reading and writing ``TrainConfig``: YAML files, ``--set key=value`` overrides, ``build_config``.

Sources, later ones winning: the dataclass defaults → a resumed run's ``config.yaml`` → a preset
(``llm.config.presets``) → a YAML file (``--config``) → ``--set`` overrides. Every raw value goes
through ``coerce``: YAML values as parsed, ``--set`` values as text (so a string field keeps
"Answer: x" verbatim), converted to the field's type or reported as a ``ConfigError`` naming the
field and the source. ``build_config`` collects every problem of every source and of
``validate`` before raising once. ``save_yaml`` writes the resolved config with each field's
docstring as a comment.

This is the module callers import (``from llm.config import build as C``): it re-exports the
schema's public names from ``llm.config.train_config`` (``__all__``), so ``C.TrainConfig``,
``C.ConfigError`` and ``C.build_config`` come from one place.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from pathlib import Path

import yaml

from llm.config.presets import get_preset
from llm.config.train_config import (
    FIELDS,
    ConfigError,
    TrainConfig,
    _suggest,
    field_docs,
    resolve,
    validate,
)

__all__ = [
    "FIELDS",
    "ConfigError",
    "TrainConfig",
    "field_docs",
    "resolve",
    "validate",
    "apply_overrides",
    "build_config",
    "coerce",
    "load_yaml",
    "parse_set",
    "save_yaml",
    "to_dict",
]


def _type_of(name: str):
    hints = typing.get_type_hints(TrainConfig)
    return hints[name]


def _optional(tp) -> tuple[bool, object]:
    args = typing.get_args(tp)
    if (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return True, rest[0]
    return False, tp


def coerce(name: str, value):
    """``value`` converted to field ``name``'s type; ValueError naming the field otherwise."""
    if name not in FIELDS:
        raise ConfigError([f"unknown config key {name!r}{_suggest(name, FIELDS)}"])
    nullable, tp = _optional(_type_of(name))
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
        if nullable:
            return None
        if tp is str and value is not None:
            return value
        raise ConfigError([f"{name}: null is not allowed; give a {tp.__name__}"])
    kind = str(tp) if typing.get_origin(tp) else getattr(tp, "__name__", str(tp))
    bad = ConfigError([f"{name}: cannot read {_shown(value)} as {kind}"])
    if typing.get_origin(tp) is not list and not isinstance(value, (str, int, float)):
        raise bad  # a list or mapping (e.g. a YAML alias bomb) is never turned into text
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise bad from None
        if not number.is_integer():
            raise bad
        return int(number)
    if tp is float:
        if isinstance(value, bool):
            raise bad
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise bad from None
        if not math.isfinite(number):
            raise ConfigError([f"{name}: {_shown(value)} is not a finite number"])
        return number
    if tp is str:
        return str(value)
    if typing.get_origin(tp) is list:
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or len(value) > MAX_LIST_ITEMS:
            raise bad
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise bad
            try:
                out.append(int(v))
            except (TypeError, ValueError):
                raise bad from None
        return out
    raise bad


#: Longest list a list field takes (a guard against generated or aliased YAML).
MAX_LIST_ITEMS = 10_000


def _shown(value) -> str:
    """``value`` for an error message: short, and never the expansion of a big container."""
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def apply_overrides(
    cfg: TrainConfig, values: dict, *, where: str, problems: list[str] | None = None
) -> TrainConfig:
    """A copy of ``cfg`` with ``values`` (field -> raw value) coerced and applied.

    Unknown keys and unreadable values are reported with ``where`` (the file or "--set") in the
    message: appended to ``problems`` when given (the readable values are still applied, so
    one pass reports everything), else raised at once as a ConfigError.
    """
    found, updates = [], {}
    for key, raw in values.items():
        try:
            updates[key] = coerce(key, raw)
        except ConfigError as e:
            found += [f"{where}: {p}" for p in e.problems]
    if found and problems is None:
        raise ConfigError(found)
    if problems is not None:
        problems += found
    return dataclasses.replace(cfg, **updates)


def parse_set(items: list[str]) -> dict:
    """``["lr=1e-6", "method=tic_grpo"]`` -> ``{"lr": "1e-6", "method": "tic_grpo"}``.

    Values stay text; ``coerce`` reads them as the field's type (so a string field keeps
    "Answer: x" verbatim, where YAML would have made it a mapping).
    """
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError([f"--set {item!r}: expected key=value"])
        key, text = item.split("=", 1)
        out[key.strip()] = text
    return out


def load_yaml(path: str | os.PathLike) -> dict:
    """The mapping in a YAML config file; ConfigError naming the file otherwise."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError([f"config file {path} does not exist"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: not valid YAML: {e}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: nested too deeply to read (not a config file?)"]) from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}: cannot read it as a YAML text file ({e})"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping of config keys, got {type(data).__name__}"])
    return data


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_yaml(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML (atomically), each key preceded by its docstring as a comment."""
    docs = field_docs()
    lines = ["# ticgrpo train config (resolved); edit and pass with --config", ""]
    for key, value in to_dict(cfg).items():
        lines.append(f"# {docs.get(key, '')}")
        lines.append(f"{key}: {json.dumps(value)}")  # JSON scalars and lists are valid YAML
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def build_config(
    *,
    preset: str | None = None,
    config_file: str | None = None,
    overrides: list[str] | None = None,
    base: dict | None = None,
) -> TrainConfig:
    """Defaults → ``base`` (e.g. a resumed run's config.yaml) → preset → file → ``--set``,
    then validated (see module docstring)."""
    cfg, problems = TrainConfig(), []
    if base:
        cfg = apply_overrides(cfg, base, where="config.yaml", problems=problems)
    if preset:
        cfg = apply_overrides(
            cfg, get_preset(preset), where=f"preset {preset!r}", problems=problems
        )
    if config_file:
        cfg = apply_overrides(
            cfg, load_yaml(config_file), where=str(config_file), problems=problems
        )
    if overrides:
        cfg = apply_overrides(cfg, parse_set(overrides), where="--set", problems=problems)
    try:
        cfg = validate(cfg)
    except ConfigError as e:
        problems += e.problems
    if problems:
        raise ConfigError(problems)
    return cfg
