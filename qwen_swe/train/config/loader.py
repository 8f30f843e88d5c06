"""Building a `RunConfig` from layers, each replacing what the previous set:

    defaults (schema.py) -> preset (smoke | pilot | full) -> YAML file -> overrides ("optim.lr=1e-4")

then validated (validation.py), and `run.max_steps` 0 resolved to `schedule.total_steps` (the one place that
happens). An unknown key names the closest known one ("unknown field 'optim.lrr' (did you mean 'optim.lr'?)").

Overrides are `dotted.path=value`; the value is read as YAML, so numbers, booleans, lists (`train.freeze=[a,b]`)
and mappings work. A path may end inside a mapping field: `data.layouts.icl=0.5` sets one layout's weight,
`optim.lr_multipliers.talker\\.text_projection=3` one multiplier (everything after the field name is the key).
Values for string fields are taken verbatim, so `data.language=no` stays the string "no".
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from .schema import PRESETS, ConfigError, RunConfig, raise_errors, suggest
from .validation import validate


def load_config(path: Optional[str | Path] = None, preset: Optional[str] = None,
                overrides: Optional[list[str]] = None) -> RunConfig:
    """defaults -> preset -> YAML file -> overrides, validated; run.max_steps 0 becomes schedule.total_steps."""
    config = RunConfig()
    errors: list[str] = []
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}{suggest(preset, list(PRESETS))}; "
                              f"choose one of {', '.join(PRESETS)}")
        _merge(config, PRESETS[preset], "", errors)
    if path is not None:
        _merge(config, _read_yaml(Path(path)), "", errors)
    for item in overrides or []:
        apply_override(config, item, errors)
    raise_errors(errors)
    validate(config)
    if config.run.max_steps == 0:
        config.run.max_steps = config.schedule.total_steps
    return config


def read_yaml_file(path: Path, what: str = "config file") -> Any:
    """What a YAML file holds, or a ConfigError naming the file: `what` not found, or not valid YAML."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error


def _read_yaml(path: Path) -> Mapping[str, Any]:
    data = read_yaml_file(path)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, ...), got {type(data).__name__}")
    return data


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _all_field_names(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted field name (sections too), for suggestions."""
    names = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        names.append(name)
        hint = _hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            names.extend(_all_field_names(hint, name + "."))
    return names


def _unknown(name: str) -> str:
    return f"unknown field {name!r}{suggest(name, _all_field_names())}"


def _merge(target: Any, data: Mapping[str, Any], prefix: str, errors: list[str]) -> None:
    """Set the fields of dataclass `target` from `data`; sections merge, values (lists, mappings) replace."""
    if not isinstance(data, Mapping):
        errors.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
        return
    hints = _hints(type(target))
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in hints:
            errors.append(_unknown(name))
            continue
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            _merge(getattr(target, key), value if value is not None else {}, name + ".", errors)
            continue
        try:
            setattr(target, key, coerce(value, hint, name))
        except ConfigError as error:
            errors.append(str(error))


# ------------------------------------------------------------------------------------------ types
def coerce(value: Any, hint: Any, name: str) -> Any:
    """`value` as type `hint`, or a ConfigError naming the field. YAML reads `1e-4` as a string: accept it."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if hint is int:
        return _as_int(value, name)
    if hint is float:
        return _as_float(value, name)
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{name}: expected a string, got {value!r} (quote it in YAML)")
    if origin is list:
        (item,) = typing.get_args(hint)
        if value is None:
            return []
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single item is a one-item list: train.freeze=talker\.x
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return [coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return {coerce(k, key_hint, f"{name} key"): coerce(v, value_hint, f"{name}.{k}") for k, v in value.items()}
    raise TypeError(f"{name}: unsupported config type {hint!r}")


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{name}: expected a number, got {value!r}")


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    number = None
    if isinstance(value, float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value)  # "1e4" steps
        except ValueError:
            pass
    if number is not None and number.is_integer():
        return int(number)
    raise ConfigError(f"{name}: expected an integer, got {value!r}")


# ------------------------------------------------------------------------------------------ overrides
def apply_override(config: RunConfig, item: str, errors: Optional[list[str]] = None) -> None:
    """Apply one `dotted.path=value` to `config` in place (errors are appended, or raised if no list is given)."""
    collect = errors if errors is not None else []
    _apply_override(config, item, collect)
    if errors is None:
        raise_errors(collect)


def _apply_override(config: RunConfig, item: str, errors: list[str]) -> None:
    if "=" not in item:
        errors.append(f"override {item!r}: expected key=value, e.g. optim.lr=1e-4")
        return
    path, raw = item.split("=", 1)
    parts = path.strip().split(".")
    target: Any = config
    for depth, part in enumerate(parts):
        name = ".".join(parts[:depth + 1])
        hints = _hints(type(target))
        if part not in hints:
            errors.append(_unknown(name))
            return
        hint = hints[part]
        rest = parts[depth + 1:]
        if dataclasses.is_dataclass(hint):
            if not rest:
                value = _parse_value(raw, dict)
                _merge(getattr(target, part), value if value is not None else {}, name + ".", errors)
                return
            target = getattr(target, part)
            continue
        try:
            if rest and typing.get_origin(hint) is dict:  # data.layouts.icl=0.5: the rest of the path is the key
                key_hint, value_hint = typing.get_args(hint)
                key = coerce(".".join(rest), key_hint, f"{name} key")  # data.schedule.2000=...: an int key
                value = coerce(_parse_value(raw, value_hint), value_hint, f"{name}.{key}")
                updated = dict(getattr(target, part))
                updated[key] = value
                setattr(target, part, updated)
            elif rest:
                errors.append(_unknown(path.strip()))
            else:
                setattr(target, part, coerce(_parse_value(raw, hint), hint, name))
        except ConfigError as error:
            errors.append(str(error))
        return


def _parse_value(raw: str, hint: Any) -> Any:
    """Read an override value as YAML, except for string fields, which take the text as written."""
    if hint is str:
        text = raw.strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return text[1:-1]
        return text
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw  # coerce() will name the field and the expected type
