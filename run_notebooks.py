#!/usr/bin/env python
"""Run the IncliNET pipeline notebooks in order with papermill.

    python run_notebooks.py --size 128 --band gri

Each run writes into its own folder ``outputs/<run-name>/``: the executed notebooks
and their HTML copies under ``notebooks/``, the data products, the library output of
each stage under ``logs/``, and ``run.json`` (parameters, package versions, git
commit, per-stage timings and status). Without ``--images``/``--catalog`` the run
starts with 00_simulate, which renders a synthetic SDSS-like sample.

Options: the run-wide parameters of ``inclinet_utils.config.RunConfig`` and every
parameter of every notebook's ``parameters`` cell (``n_batches`` -> ``--n-batches``).
Values merge as notebook default < ``--preset`` < ``--config FILE.yaml`` < command
line, and all are checked before anything is written. ``--options-table`` prints the
README's options table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from inclinet_utils import config
from inclinet_utils import io as iio
from inclinet_utils import layout
from inclinet_utils.presets import PRESETS

REPO = Path(__file__).resolve().parent
NOTEBOOKS = REPO / "notebooks"
OUTPUTS = REPO / "outputs"
log = logging.getLogger("run_notebooks")

# Options of the runner itself: (flags, argparse keywords, help). Also the head of the options table.
RUN_OPTIONS = [
    (("--run-name",), {}, "plain folder name under the output root (default: <date>-<time>_<size>_<bands>)"),
    (("--output-root",), {"type": Path, "default": OUTPUTS}, "folder holding the run folders (default: outputs/)"),
    (("--stages",), {"nargs": "+", "metavar": "STAGE"}, "stages to run, by name or number (default: all)"),
    (("--from",), {"dest": "from_stage", "metavar": "STAGE"}, "first stage to run"),
    (("--to",), {"dest": "to_stage", "metavar": "STAGE"}, "last stage to run"),
    (("--resume",), {"action": "store_true"},
     "continue an existing run folder: skip completed stages, redo the rest"),
    (("--preset",), {"choices": sorted(PRESETS)}, "named parameter set (inclinet_utils.presets)"),
    (("--config",), {"type": Path, "metavar": "FILE.yaml"},
     "YAML file of parameter: value; overrides the preset, the command line overrides it"),
    (("--options-table",), {"action": "store_true"}, "print the README options table and exit"),
]


# ---- options ----------------------------------------------------------------------

def build_parser(params: dict[str, config.Parameter]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_notebooks.py", description="Run the IncliNET notebooks with papermill. Precedence: notebook default < "
                    "--preset < --config FILE.yaml < command line.")
    group = parser.add_argument_group("run")
    for flags, kw, help_text in RUN_OPTIONS:
        group.add_argument(*flags, help=help_text, **kw)
    groups = {}
    for p in params.values():
        if p.stage not in groups:
            title = "run-wide parameters" if p.stage == config.RUN_STAGE else f"stage {p.stage}"
            groups[p.stage] = parser.add_argument_group(title)
        _add_parameter_option(groups[p.stage], p)
    return parser


def _add_parameter_option(group, p: config.Parameter) -> None:
    kw = dict(dest=p.name, default=None,
              help=f"{p.help} (default: {_default_text(p) or 'empty'})".replace("%", "%%"))
    if p.type == "bool":
        group.add_argument(p.flag, action=argparse.BooleanOptionalAction, **kw)
    elif p.type.startswith("list["):
        item = int if p.type == "list[int]" else str
        rule = config.RULES.get(p.name)
        group.add_argument(p.flag, nargs="+" if rule and rule.nonempty else "*", type=item, **kw)
    else:
        group.add_argument(p.flag, type={"int": int, "float": float, "str": str}[p.type], **kw)


def _default_text(p: config.Parameter) -> str:
    """The default as one would type it; '' for an empty text or list."""
    if isinstance(p.default, list):
        return " ".join(map(str, p.default))
    return str(p.default)


def options_table(params: dict[str, config.Parameter]) -> str:
    """The README's options table (markdown), from RUN_OPTIONS, RunConfig and the notebooks."""
    rows = ["| option | default | stage | what it does |", "|---|---|---|---|"]
    for flags, kw, help_text in RUN_OPTIONS:
        rows.append(f"| `{flags[0]}` | | run | {help_text} |")
    for p in params.values():
        flag = f"{p.flag}, --no-{p.flag[2:]}" if p.type == "bool" else p.flag
        stage = "all (run-wide)" if p.stage == config.RUN_STAGE else p.stage
        default = f"`{_default_text(p)}`" if _default_text(p) else ""
        rows.append(f"| `{flag}` | {default} | {stage} | {p.help.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def resolve_parameters(params, args) -> tuple[dict, dict]:
    """Merged and validated values (notebook default < preset < config file < command line) and their sources."""
    given = {name: getattr(args, name) for name in params if getattr(args, name, None) is not None}
    from_file = config.read_config_file(args.config, params) if args.config else {}
    values, sources = config.merge(params, PRESETS.get(args.preset, {}), from_file, given)
    if args.preset:
        sources = {k: f"preset {args.preset}" if s == "preset" else s for k, s in sources.items()}
    if args.config:
        sources = {k: f"--config {args.config}" if s == "config file" else s for k, s in sources.items()}
    return config.validate(params, values, sources), sources


# ---- run folder -------------------------------------------------------------------

def new_record(run_dir: Path, values: dict, sources: dict, args, stages: list[str]) -> dict:
    """The run.json of a new run (nothing is written here)."""
    return {
        "run_name": run_dir.name,
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "started_at": iio.now_iso(),
        "parameters": values,
        "parameter_sources": {k: s for k, s in sources.items() if s != "default"},
        "preset": args.preset,
        "config_file": str(args.config.resolve()) if args.config else None,
        "stages_requested": stages,
        "input": "real" if values.get("images_dir") else "simulated",
        **git_and_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "stages": {},
        **_parent(values),
    }


def _parent(values: dict) -> dict:
    """A fine-tuning run's parent (05_train's init_from) and its metrics, for run.json."""
    if not values.get("init_from"):
        return {}
    from inclinet_utils import finetune

    return {"parent": finetune.parent_record(values["init_from"])}


def resumed_record(run_dir: Path, params: dict, values: dict, sources: dict) -> dict:
    """run.json of an existing run; values given now (not defaults) must equal the recorded ones."""
    record_path = layout.run_paths(run_dir)["run_json"]
    if not record_path.is_file():
        raise config.ConfigError(f"--resume: {record_path} not found; nothing to resume")
    record = iio.read_json(record_path)
    recorded = {**{k: p.default for k, p in params.items()}, **record["parameters"]}
    clash = {k: (recorded.get(k), values[k]) for k, s in sources.items()
             if s != "default" and recorded.get(k) != values[k]}
    if clash:
        raise config.ConfigError("--resume with parameters that differ from the recorded run: " + ", ".join(
            f"{params[k].flag}: recorded {a!r}, given {b!r}" for k, (a, b) in clash.items()))
    record["parameters"] = recorded
    record.setdefault("resumed_at", []).append(iio.now_iso())
    record.update(git_and_versions())
    return record


def git_and_versions() -> dict:
    return {"git_commit": iio.git_commit(REPO), "packages": iio.package_versions()}


def plan_run(argv) -> tuple[Path, dict, list[str], dict, argparse.Namespace] | None:
    """Parse, merge and validate everything; returns (run_dir, record, stages, params, args).

    Nothing is written here; every mistake exits with a message naming the value.
    """
    stages = config.discover_stages(NOTEBOOKS)
    params = config.all_parameters(config.stage_parameters(NOTEBOOKS, stages))
    parser = build_parser(params)
    args = parser.parse_args(argv)
    if args.options_table:
        print(options_table(params), end="")
        return None
    try:
        values, sources = resolve_parameters(params, args)
        name = args.run_name if args.run_name is not None else layout.default_run_name(values["size"], values["bands"])
        try:
            layout.check_run_name(name)
        except ValueError as exc:
            raise config.ConfigError(f"--run-name: {exc}") from exc
        root = args.output_root.resolve()
        if root.exists() and not root.is_dir():
            raise config.ConfigError(f"--output-root {root} is a file, not a folder")
        run_dir = root / name
        if args.resume:
            record = resumed_record(run_dir, params, values, sources)
            values = record["parameters"]
        elif run_dir.exists():
            raise config.ConfigError(f"run folder {run_dir} already exists; pass --resume to continue it, "
                                     "or choose another --run-name")
        real = config.check_input(values["images_dir"], values["catalog_path"])
        selected = config.select_stages(stages, args.stages, args.from_stage, args.to_stage, real,
                                        new_run=not args.resume)
        if not args.resume:
            record = new_record(run_dir, values, sources, args, selected)
    except config.ConfigError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    return run_dir, record, selected, params, args


# ---- terminal and logs ------------------------------------------------------------

@contextlib.contextmanager
def terminal_and_logs(logs_dir: Path):
    """Route the runner's messages to the terminal and everything else to ``logs/``.

    Library logging (papermill, nbclient, warnings) goes to logs/runner.log; the
    terminal gets the runner's own lines through copies of stdout/stderr, so the
    process-level output of kernels and libraries can be sent to the stage logs.
    """
    logs_dir.mkdir(parents=True, exist_ok=True)
    term_out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    term_err = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    to_out = logging.StreamHandler(term_out)
    to_out.addFilter(lambda r: r.levelno < logging.WARNING)
    to_err = logging.StreamHandler(term_err)
    to_err.setLevel(logging.WARNING)
    to_file = logging.FileHandler(logs_dir / "runner.log")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(to_file)
    log.addHandler(to_out)
    log.addHandler(to_err)
    logging.captureWarnings(True)
    try:
        yield term_out
    finally:
        logging.captureWarnings(False)
        for h, owner in ((to_file, root), (to_out, log), (to_err, log)):
            owner.removeHandler(h)
            h.close()
        root.setLevel(old_level)
        term_out.close()
        term_err.close()


@contextlib.contextmanager
def output_to(path: Path):
    """Send this process's (and its children's) stdout and stderr to `path`, appending."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


# ---- stages -----------------------------------------------------------------------

def export_html(notebook_path: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook_path, as_version=4))
    return iio.write_text(notebook_path.with_suffix(".html"), body, overwrite=True)


def run_stage(stage: str, stage_params: dict, values: dict, run_dir: Path, progress) -> None:
    """Execute one notebook into the run folder; an earlier failed copy is kept beside it."""
    import papermill

    out_nb = layout.notebook_path(run_dir, stage)
    if out_nb.exists():
        stamp = dt.datetime.fromtimestamp(out_nb.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
        for suffix in (".ipynb", ".html"):
            old = out_nb.with_suffix(suffix)
            if old.exists():
                old.rename(old.with_name(layout.failed_notebook_name(stage, stamp, suffix)))
    params = {name: values[name] for name in stage_params}
    params["run_dir"] = str(run_dir)
    try:
        papermill.execute_notebook(
            str(NOTEBOOKS / f"{stage}.ipynb"), str(out_nb), parameters=params, cwd=str(NOTEBOOKS),
            kernel_name="python3", progress_bar=progress, request_save_on_cell_execute=True)
    finally:
        if out_nb.exists():
            export_html(out_nb)


def run_stages(run_dir: Path, record: dict, selected: list[str], params: dict, resume: bool, term) -> int:
    """Run the selected stages in order, one terminal line each; 0, or 1 (130 on Ctrl-C) on failure."""
    paths = layout.run_paths(run_dir)
    write = lambda: iio.write_json(paths["run_json"], record, overwrite=True)  # noqa: E731
    by_stage = {s: {n: p for n, p in params.items() if p.stage == s} for s in selected}
    for k, stage in enumerate(selected, 1):
        head = f"[{k}/{len(selected)}] {stage:<12}"
        if resume and record["stages"].get(stage, {}).get("status") == "completed":
            log.info("%s skipped (completed before)", head)
            continue
        entry = record["stages"][stage] = {"status": "running", "started_at": iio.now_iso(),
                                           "notebook": f"notebooks/{stage}.ipynb",
                                           "html": f"notebooks/{stage}.html", "log": f"logs/{stage}.log"}
        write()
        bar = {"desc": head, "file": term, "leave": False, "disable": not term.isatty(),
               "bar_format": "{desc} {bar:20} {n_fmt}/{total_fmt} cells {elapsed}"}
        t0 = time.perf_counter()
        try:
            with output_to(paths["logs"] / f"{stage}.log"):
                run_stage(stage, by_stage[stage], record["parameters"], run_dir, bar)
        except BaseException as exc:  # also Ctrl-C: record it, then stop
            entry.update(status="failed", wall_s=round(time.perf_counter() - t0, 2), error=_describe(exc))
            record["finished_at"] = iio.now_iso()
            write()
            log.info("%s failed    %7.1f s", head, entry["wall_s"])
            log.error("stage %s FAILED: notebook %s (library output: %s)\n%s", stage, run_dir / entry["notebook"],
                      run_dir / entry["log"], entry["error"])
            return 130 if isinstance(exc, KeyboardInterrupt) else 1
        entry.update(status="completed", wall_s=round(time.perf_counter() - t0, 2))
        write()
        log.info("%s completed %7.1f s", head, entry["wall_s"])
    record["finished_at"] = iio.now_iso()
    write()
    return 0


def _describe(exc: BaseException) -> str:
    import papermill

    if isinstance(exc, papermill.PapermillExecutionError):
        return f"{exc.ename}: {exc.evalue} (cell {exc.exec_count})"
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def summary(run_dir: Path, record: dict) -> str:
    """The end-of-run table: status and wall time of each stage, then the accuracy table."""
    lines = ["", f"{'stage':<14} {'status':<10} {'wall s':>8}"]
    for stage, entry in record["stages"].items():
        lines.append(f"{stage:<14} {entry['status']:<10} {entry.get('wall_s', 0):8.1f}")
    metrics = layout.run_paths(run_dir)["metrics"]
    if metrics.is_file():
        from inclinet_utils.evaluate import summarize_metrics

        lines += ["", summarize_metrics(iio.read_json(metrics))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    plan = plan_run(argv)
    if plan is None:
        return 0
    run_dir, record, selected, params, args = plan
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # kernels inherit it: less TensorFlow start-up output
    paths = layout.run_paths(run_dir)
    paths["notebooks"].mkdir(parents=True, exist_ok=True)
    iio.write_json(paths["run_json"], record, overwrite=True)
    with terminal_and_logs(paths["logs"]) as term, output_to(paths["logs"] / "runner.out"):
        log.info("run folder: %s (library output in %s)", run_dir, paths["logs"])
        code = run_stages(run_dir, record, selected, params, args.resume, term)
        log.info(summary(run_dir, record))
    return code


if __name__ == "__main__":
    sys.exit(main())
