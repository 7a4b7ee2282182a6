"""Run configuration: every parameter of a run, where it is declared, how values merge,
and their validation before the first stage runs.

* Run-wide parameters (seed, size, bands, input images and catalog, workers) are declared
  once, here, in `RunConfig`. A notebook gets them from its run folder with
  ``run_config(run_dir)``: the values run_notebooks.py recorded in ``run.json``, or the
  defaults below in a folder without one (JupyterLab).
* Stage parameters are declared in each notebook's ``parameters`` cell, one
  ``name: type = default  # help`` a line, and read with `papermill.inspect_notebook`.
* Values merge as notebook default < preset < ``--config FILE.yaml`` < command line
  (`merge`), and `validate` checks every one (type, range, band names, paths, that the
  catalog parses) so a bad value stops the run before anything is written.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
import os
from pathlib import Path
from typing import Any

from . import BANDS
from .presets import INSTRUMENTS

RUN_JSON = "run.json"
RUN_STAGE = "run"  # the 'stage' of run-wide parameters
TYPES = ("int", "float", "bool", "str", "list[str]", "list[int]")
# Command-line spellings that differ from the parameter name.
FLAGS = {"bands": "--band", "images_dir": "--images", "catalog_path": "--catalog"}
MODEL_NAMES = ("model4", "model5", "model6")  # inclinet_utils.models.MODELS (checked by a test)
CLASSIFIER_NAMES = tuple(f"{m}_binary" for m in MODEL_NAMES)  # the accept/reject classifiers


class ConfigError(ValueError):
    """A parameter value, config file or stage selection that the run cannot use."""


def _field(default, help_text: str):
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help_text})
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The run-wide parameters, shared by every stage of a run."""

    seed: int = _field(42, "random seed of the whole run")
    size: int = _field(128, "image size in pixels, size x size")
    bands: list[str] = _field(list(BANDS), "bands to process: g, r, i (grayscale) and gri (colour)")
    images_dir: str = _field("", "folder of real galaxy images; empty for the run's simulated sample")
    catalog_path: str = _field("", "real pipe-delimited catalog; empty for the run's simulated catalog")
    n_workers: int = _field(0, "worker processes; 0 uses all cores")


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One parameter: its declared type, default and help, and the stage declaring it."""

    name: str
    type: str
    default: Any
    help: str
    stage: str

    @property
    def flag(self) -> str:
        return FLAGS.get(self.name, "--" + self.name.replace("_", "-"))


@dataclasses.dataclass(frozen=True)
class Rule:
    """Allowed values beyond the type: a numeric range (per list item too), choices, a path."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    nonempty: bool = False
    path: str | None = None  # 'dir' or 'file': a non-empty value must be an existing one

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        if self.choices:
            parts.append("one of " + ", ".join(map(str, self.choices)))
        return " and ".join(parts)


# Allowed values of every numeric or restricted parameter (a test checks that each names
# a declared parameter and that every int and float parameter has one).
RULES = {
    "seed": Rule(low=0),
    "size": Rule(low=1, high=1024),
    "bands": Rule(choices=BANDS, nonempty=True),
    "images_dir": Rule(path="dir"),
    "catalog_path": Rule(path="file"),
    "n_workers": Rule(low=0),
    "n_galaxies": Rule(low=1),
    "rotation_deg": Rule(low=-360, high=360),
    "zoom": Rule(low=1),
    "test_fraction": Rule(low=0, high=1, low_open=True, high_open=True),
    "m_iter": Rule(low=0),
    "bagging_fraction": Rule(low=0, high=1, low_open=True),
    "n_batches": Rule(low=1),
    "batch_size": Rule(low=1),
    "models": Rule(choices=MODEL_NAMES, nonempty=True),
    "usets": Rule(low=0),
    "n_passes": Rule(low=1),
    "training_batch_size": Rule(low=1),
    "learning_rate": Rule(low=0, high=1, low_open=True),
    "bn_momentum": Rule(low=0, high=1, high_open=True),
    "mixed_precision": Rule(choices=("auto", "float32", "mixed_bfloat16", "mixed_float16")),
    "classifier_batch_size": Rule(low=0),
    "brightness_range": Rule(low=1),
    "classifiers": Rule(choices=CLASSIFIER_NAMES),
    "classifier_usets": Rule(low=0),
    "classifier_n_passes": Rule(low=1),
    "classifier_learning_rate": Rule(low=0, high=1, low_open=True),
    "bias_fit_max": Rule(low=1),
    "q0": Rule(low=0, high=1, high_open=True),
    "axis_ratio_image": Rule(choices=("original", "prepared")),
    "n_outliers": Rule(low=0),
    "real_sdss_dir": Rule(path="dir"),
    "instrument": Rule(choices=tuple(INSTRUMENTS)),
    "init_from": Rule(path="dir"),
    "trainable": Rule(choices=("all", "head")),
    "frozen_passes": Rule(low=0),
    "finetune_learning_rate": Rule(low=0, high=1, low_open=True),
}


# ---- declarations -----------------------------------------------------------------

def run_parameters() -> dict[str, Parameter]:
    """The run-wide parameters of `RunConfig`, as Parameters."""
    defaults = RunConfig()
    return {f.name: Parameter(f.name, f.type, getattr(defaults, f.name), f.metadata["help"], RUN_STAGE)
            for f in dataclasses.fields(RunConfig)}


def discover_stages(notebook_dir: str | os.PathLike) -> list[str]:
    """Stage names from the notebooks named NN_name.ipynb, in order."""
    stages = sorted(p.stem for p in Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))
    if not stages:
        raise ConfigError(f"no stage notebooks NN_name.ipynb in {notebook_dir}")
    return stages


def stage_parameters(notebook_dir: str | os.PathLike, stages: list[str]) -> dict[str, dict[str, Parameter]]:
    """{stage: {name: Parameter}} from each notebook's parameters cell (without run_dir).

    Each name must carry a type annotation, be declared by one notebook only, and not be
    a run-wide parameter (those live in RunConfig).
    """
    import papermill

    run_wide, owner, found = run_parameters(), {}, {}
    for stage in stages:
        path = Path(notebook_dir) / f"{stage}.ipynb"
        declared = papermill.inspect_notebook(str(path))
        if "run_dir" not in declared:
            raise ConfigError(f"{path}: no parameters cell declaring run_dir")
        found[stage] = {}
        for name, p in declared.items():
            if name == "run_dir":
                continue
            where = f"{path}: parameter {name!r}"
            if name in run_wide:
                raise ConfigError(f"{where} is run-wide; read it with config.run_config(run_dir) instead")
            if name in owner:
                raise ConfigError(f"{where} is already declared by {owner[name]}")
            if p["inferred_type_name"] not in TYPES:
                raise ConfigError(f"{where} needs a type annotation, one of {', '.join(TYPES)}")
            try:
                default = ast.literal_eval(p["default"])
            except (ValueError, SyntaxError) as exc:
                raise ConfigError(f"{where}: default {p['default']!r} is not a literal") from exc
            param = Parameter(name, p["inferred_type_name"], default, p["help"], stage)
            found[stage][name] = dataclasses.replace(param, default=check_value(param, default, where))
            owner[name] = stage
    return found


def all_parameters(stage_params: dict[str, dict[str, Parameter]]) -> dict[str, Parameter]:
    """Run-wide and stage parameters in one mapping, run-wide first."""
    merged = run_parameters()
    for params in stage_params.values():
        merged.update(params)
    return merged


# ---- values -----------------------------------------------------------------------

def check_value(param: Parameter, value: Any, origin: str) -> Any:
    """`value` converted to the parameter's type (int -> float) and checked against RULES.

    Raises ConfigError naming the option, the value and where it came from.
    """
    shown = _shown(value)

    def fail(expected: str):
        raise ConfigError(f"{param.flag} {shown} ({origin}): expected {expected}")

    if param.type.startswith("list["):
        item_type = param.type[5:-1]
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            fail(f"a list of {item_type}")
        items = [_typed(v, item_type, fail) for v in value]
        _check_rule(param.name, items, fail, is_list=True)
        return items
    value = _typed(value, param.type, fail)
    _check_rule(param.name, [value], fail, is_list=False)
    return value


def _typed(value: Any, type_name: str, fail) -> Any:
    if type_name == "bool":
        if not isinstance(value, bool):
            fail("True or False")
    elif type_name == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
    elif type_name == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail("a finite number")
        value = float(value)
    elif not isinstance(value, str):
        fail("a text")
    return value


def _check_rule(name: str, items: list, fail, is_list: bool) -> None:
    rule = RULES.get(name)
    if rule is None:
        return
    if rule.nonempty and not items:
        fail("at least one value" + (f" ({rule.describe()})" if rule.describe() else ""))
    for v in items:
        if rule.choices is not None and v not in rule.choices:
            fail(rule.describe())
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            too_low = rule.low is not None and (v <= rule.low if rule.low_open else v < rule.low)
            too_high = rule.high is not None and (v >= rule.high if rule.high_open else v > rule.high)
            if too_low or too_high:
                fail(("values " if is_list else "a value ") + rule.describe())
        if rule.path and v:
            exists = Path(v).is_dir() if rule.path == "dir" else Path(v).is_file()
            if not exists:
                fail(f"an existing {'folder' if rule.path == 'dir' else 'file'}; {v} does not exist")


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) if value else "(empty list)"
    return str(value) if value != "" else "''"


def read_config_file(path: str | os.PathLike, params: dict[str, Parameter]) -> dict[str, Any]:
    """Parameter values of a YAML mapping ``name: value``; relative paths are relative to the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of parameter: value, got {type(data).__name__}")
    for key in data:
        if key not in params:
            near = difflib.get_close_matches(str(key), list(params), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"--config {path}: unknown parameter {key!r}{hint}")
        rule = RULES.get(key)
        if rule and rule.path and isinstance(data[key], str) and data[key]:
            data[key] = str((path.parent / data[key]).resolve())
    return data


def merge(params: dict[str, Parameter], preset: dict[str, Any] | None = None,
          config_file: dict[str, Any] | None = None,
          command_line: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """(values, source of each value): notebook default < preset < config file < command line."""
    layers = [("preset", preset or {}), ("config file", config_file or {}), ("command line", command_line or {})]
    values = {name: p.default for name, p in params.items()}
    sources = dict.fromkeys(params, "default")
    for source, layer in layers:
        for name, value in layer.items():
            if name not in params:
                raise ConfigError(f"{source}: unknown parameter {name!r}")
            values[name], sources[name] = value, source
    return values, sources


def validate(params: dict[str, Parameter], values: dict[str, Any], sources: dict[str, str]) -> dict[str, Any]:
    """Every value checked and typed; real input needs both an image folder and a catalog that parses."""
    checked = {name: check_value(p, values[name], sources.get(name, "default")) for name, p in params.items()}
    for name in ("images_dir", "catalog_path", "init_from"):
        if checked.get(name):
            checked[name] = str(Path(checked[name]).resolve())
    check_input(checked.get("images_dir", ""), checked.get("catalog_path", ""))
    return checked


def check_input(images_dir: str, catalog_path: str) -> bool:
    """True for real input (both given, catalog parses); False for none; ConfigError otherwise."""
    if not images_dir and not catalog_path:
        return False
    if not (images_dir and catalog_path):
        missing = "--catalog (catalog.csv)" if images_dir else "--images (folder of galaxy images)"
        raise ConfigError(f"real input needs both --images and --catalog; {missing} is missing")
    from .catalog import CatalogError, read_catalog

    try:
        read_catalog(catalog_path)
    except CatalogError as exc:
        raise ConfigError(f"--catalog {catalog_path}: {exc}") from exc
    return True


# ---- stages -----------------------------------------------------------------------

def select_stages(stages: list[str], names: list[str] | None = None, first: str | None = None,
                  last: str | None = None, real_input: bool = False, new_run: bool = True) -> list[str]:
    """The stages to run, in pipeline order, from --stages/--from/--to (by name or number).

    Real input skips 00_simulate. A new run must start at the pipeline's first stage and
    leave no gap, since each stage reads the products of the one before.
    """
    pipeline = [s for s in stages if not (real_input and s == stages[0] and s.endswith("_simulate"))]
    chosen = [_resolve(stages, t) for t in names] if names else list(pipeline)
    chosen = [s for s in pipeline if s in chosen]
    lo = _resolve(stages, first) if first else None
    hi = _resolve(stages, last) if last else None
    if lo and hi and lo > hi:
        raise ConfigError(f"--from {first} comes after --to {last}; stages run in the order {', '.join(stages)}")
    chosen = [s for s in chosen if (lo is None or s >= lo) and (hi is None or s <= hi)]
    if not chosen:
        raise ConfigError("no stage selected" + (" (00_simulate is not run with --images)" if real_input else ""))
    if new_run:
        expected = pipeline[:len(chosen)]
        if chosen != expected:
            gap = next(s for s in expected if s not in chosen)
            raise ConfigError(f"a new run must run {gap} before {chosen[-1]} (stages {', '.join(chosen)} "
                              "were selected); pass --resume to continue an existing run folder")
    return chosen


def _resolve(stages: list[str], token: str) -> str:
    for s in stages:
        if token in (s, s.split("_")[0], s.split("_", 1)[1]):
            return s
    raise ConfigError(f"unknown stage {token!r}; expected one of {', '.join(stages)} (name or number)")


# ---- run folder -------------------------------------------------------------------

def run_config(run_dir: str | os.PathLike) -> RunConfig:
    """The run-wide parameters of a run folder: those its run.json records, else the defaults."""
    record = Path(run_dir) / RUN_JSON
    if not record.is_file():
        return RunConfig()
    from . import io as iio

    recorded = iio.read_json(record).get("parameters", {})
    params = run_parameters()
    values = {name: check_value(p, recorded[name], str(record)) for name, p in params.items() if name in recorded}
    return RunConfig(**values)
