"""Loading a run config: defaults, then a YAML recipe, then `key=value` overrides, each value
coerced to its field's type; unknown keys are errors that name the nearest valid ones."""

from __future__ import annotations

import dataclasses
import difflib
import typing
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml

from fast_electra_ds.config.schema import RECIPE_DIR, RunConfig, field_docs, flatten, hints
from fast_electra_ds.errors import UserError


def resolve_recipe(name_or_path: str) -> Path:
    """A bundled recipe name (`tiny`, `small`, ...) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"config file {path} does not exist; pass a recipe name "
                            f"({', '.join(list_recipes())}) or the path of a YAML file")
        return path
    bundled = RECIPE_DIR / f"{name_or_path}.yaml"
    if not bundled.is_file():
        raise UserError(f"unknown recipe {name_or_path!r}; bundled recipes: "
                        f"{', '.join(list_recipes())}, or pass the path of a YAML file")
    return bundled


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_config(recipe: str | None, overrides: list[str] = ()) -> RunConfig:
    """Defaults, then the recipe, then `key=value` overrides. Not validated yet: call validate()."""
    cfg = RunConfig()
    if recipe is not None:
        path = resolve_recipe(recipe)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise UserError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
        for key, value in flatten(data).items():
            if key in _MOVED:
                _moved_in_file(key, value, cfg, source=str(path))
            else:
                _set(cfg, key, value, source=str(path))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not of the form key=value "
                            f"(e.g. optim.lr=1e-4)")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set(cfg, key.strip(), value, source="command line")
    return cfg


def _set(cfg: RunConfig, key: str, value: Any, source: str) -> None:
    obj: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            _unknown_key(key, source)
        if i == len(parts) - 1:
            break
        obj = getattr(obj, part)
        if not dataclasses.is_dataclass(obj):
            _unknown_key(key, source)
    typ = hints(type(obj))[parts[-1]]
    if dataclasses.is_dataclass(typ):
        _unknown_key(key, source)
    setattr(obj, parts[-1], _coerce(value, typ, key, source))


# Keys that moved: old key -> (new key or None when the value does not carry over, what to say).
# A file (a recipe, or the config.yaml of a run made before the move) still loads, with a
# warning; on the command line the old key is an error that names the new one.
_MOVED = {"train.eval_every": ("eval.every", "eval.every"),
          "train.eval_batches": (None, "eval.num_sequences (now counted in sequences, not "
                                       "batches)")}


def _moved_in_file(key: str, value: Any, cfg: RunConfig, source: str) -> None:
    new_key, name = _MOVED[key]
    kept = f"; its value {value!r} is used" if new_key else "; its value is ignored"
    warnings.warn(f"config key {key!r} ({source}) is now {name}{kept}", stacklevel=3)
    if new_key:
        _set(cfg, new_key, value, source=source)


def _unknown_key(key: str, source: str) -> typing.NoReturn:
    if key in _MOVED:
        raise UserError(f"config key {key!r} ({source}) is now {_MOVED[key][1]}")
    valid = list(field_docs())
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UserError(f"unknown config key {key!r} ({source}).{hint} Valid keys:\n  "
                    + "\n  ".join(valid))


def _coerce(value: Any, typ: Any, key: str, source: str) -> Any:
    def bad(expected: str) -> typing.NoReturn:
        raise UserError(f"{key}={value!r} ({source}): expected {expected}")

    origin = typing.get_origin(typ)
    if origin is Literal:
        choices = typing.get_args(typ)
        # YAML 1.1 reads a bare on / off (also yes / no, true / false) as a boolean
        if isinstance(value, bool) and {"on", "off"} <= set(choices):
            value = "on" if value else "off"
        if value not in choices:
            bad("one of " + ", ".join(map(str, choices)))
        return value
    if origin is list:
        (item_type,) = typing.get_args(typ)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, list):
            bad(f"a list of {item_type.__name__}")
        return [_coerce(v, item_type, key, source) for v in value]
    if typ is bool:
        if not isinstance(value, bool):
            bad("true or false")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            bad("an integer")
        return value
    if typ is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                bad("a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad("a number")
        return float(value)
    if typ is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)):
            bad("a string")
        return str(value)
    raise AssertionError(f"unhandled config type {typ} for {key}")


