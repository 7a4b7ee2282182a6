#!/usr/bin/env python
"""Run the IncliNET pipeline notebooks in order with papermill.

    python run_notebooks.py --size 128 --band gri

Each run writes into its own folder ``outputs/<run-name>/``: the executed
notebooks and their HTML copies under ``notebooks/``, the data products, and
``run.json`` (parameters, package versions, git commit, per-stage timings and
status). Without ``--images``/``--catalog`` the run starts with 00_simulate, which
renders a synthetic SDSS-like sample in the real input format.

Every parameter of every notebook's ``parameters`` cell is also a command-line
option here (``n_batches`` -> ``--n-batches``), so the notebooks stay the single
source of their defaults and help texts.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import os
import platform
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent
NOTEBOOKS = REPO / "notebooks"
OUTPUTS = REPO / "outputs"
SIMULATE_STAGE = "00_simulate"

# Options whose CLI name differs from the notebook parameter they feed.
ALIASES = {"bands": "--band", "images_dir": "--images", "catalog_path": "--catalog"}
# Parameters the runner sets itself.
RUNNER_OWNED = {"run_dir"}
BAND_CHOICES = ("g", "r", "i", "gri")


def discover_stages(notebook_dir: Path = NOTEBOOKS) -> list[str]:
    """Stage names from notebooks named NN_name.ipynb, in order."""
    return sorted(p.stem for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(stages: list[str], notebook_dir: Path = NOTEBOOKS) -> dict[str, dict[str, dict]]:
    """{stage: {name: {default, help}}} from each notebook's cell tagged 'parameters'.

    Each line is `name = <literal>  # help`; parsed with ast and tokenize rather
    than papermill's regex, which rejects help texts holding quotes or brackets.
    """
    import io
    import tokenize

    import nbformat

    params = {}
    for stage in stages:
        path = notebook_dir / f"{stage}.ipynb"
        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        if not cells:
            raise SystemExit(f"notebook {path} has no cell tagged 'parameters'")
        source = cells[0].source
        comments = {tok.start[0]: tok.string.lstrip("#").strip()
                    for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                    if tok.type == tokenize.COMMENT}
        params[stage] = {}
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                params[stage][node.targets[0].id] = {"default": ast.literal_eval(node.value),
                                                     "help": comments.get(node.lineno, "")}
    return params


def build_parser(stage_params: dict[str, dict[str, dict]]) -> argparse.ArgumentParser:
    stages = list(stage_params)
    parser = argparse.ArgumentParser(
        description="Run the IncliNET notebooks (00_simulate ... 06_evaluate) with papermill.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument("--run-name", help="folder name under outputs/ (default: <date>-<time>_<size>_<bands>)")
    run.add_argument("--output-root", type=Path, default=OUTPUTS, help="folder holding the run folders")
    run.add_argument("--stages", nargs="+", metavar="STAGE",
                     help=f"stages to run, by name or number (of {', '.join(stages)})")
    run.add_argument("--from", dest="from_stage", metavar="STAGE", help="first stage to run")
    run.add_argument("--to", dest="to_stage", metavar="STAGE", help="last stage to run")
    run.add_argument("--resume", action="store_true",
                     help="continue an existing run folder: skip completed stages, redo the rest")
    run.add_argument("--preset", choices=_preset_names(), default=None,
                     help="named set of stage parameters (explicit options still win)")

    seen = set()
    for stage, params in stage_params.items():
        group = parser.add_argument_group(f"stage {stage}")
        for name, p in params.items():
            if name in RUNNER_OWNED or name in seen:
                continue
            seen.add(name)
            _add_parameter_option(group, name, p["default"], p["help"])
    return parser


def _add_parameter_option(group, name: str, default, help_text: str) -> None:
    flag = ALIASES.get(name, "--" + name.replace("_", "-"))
    kw = dict(dest=name, default=None, help=f"{help_text} (notebook default: {default!r})")
    if isinstance(default, bool):
        group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
    elif isinstance(default, list):
        choices = BAND_CHOICES if name == "bands" else None
        group.add_argument(flag, nargs="*", type=_literal, choices=choices, **kw)
    elif isinstance(default, (int, float)):
        group.add_argument(flag, type=type(default), **kw)
    else:
        group.add_argument(flag, type=str, **kw)


def _literal(text: str):
    """A list item from the command line: a Python literal (2, 0.5) or else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _preset_names() -> list[str]:
    from inclinet_utils.presets import PRESETS

    return sorted(PRESETS)


def select_stages(stages: list[str], args, real_input: bool) -> list[str]:
    def resolve(token: str) -> str:
        for s in stages:
            if token == s or token == s.split("_")[0] or token == s.split("_", 1)[1]:
                return s
        raise SystemExit(f"unknown stage {token!r}; expected one of {stages}")

    chosen = stages
    if args.stages:
        wanted = {resolve(t) for t in args.stages}
        chosen = [s for s in stages if s in wanted]
    if args.from_stage:
        chosen = [s for s in chosen if s >= resolve(args.from_stage)]
    if args.to_stage:
        chosen = [s for s in chosen if s <= resolve(args.to_stage)]
    if real_input:
        chosen = [s for s in chosen if s != SIMULATE_STAGE]
    if not chosen:
        raise SystemExit("no stage selected")
    return chosen


def effective_parameters(stage_params, args) -> tuple[dict, set[str]]:
    """Merged parameters (explicit option > preset > notebook default) and the names set explicitly."""
    from inclinet_utils.presets import PRESETS

    values, explicit = {}, set()
    preset = PRESETS[args.preset] if args.preset else {}
    for params in stage_params.values():
        for name, p in params.items():
            if name in RUNNER_OWNED:
                continue
            given = getattr(args, name, None)
            if given is not None:
                values[name] = given
                explicit.add(name)
            elif name in preset:
                values[name] = preset[name]
            else:
                values.setdefault(name, p["default"])
    for name in ("images_dir", "catalog_path"):
        if values.get(name):
            values[name] = str(Path(values[name]).resolve())
    return values, explicit


def check_real_input(values: dict) -> bool:
    """Validate --images/--catalog before anything is written; True for real input."""
    images, catalog = values.get("images_dir", ""), values.get("catalog_path", "")
    if not images and not catalog:
        return False
    if not (images and catalog):
        raise SystemExit("real input needs both --images (folder of galaxy images) and --catalog (catalog.csv)")
    if not Path(images).is_dir():
        raise SystemExit(f"--images {images}: no such folder")
    from inclinet_utils.catalog import CatalogError, read_catalog

    try:
        read_catalog(catalog)
    except CatalogError as exc:
        raise SystemExit(f"--catalog: {exc}")
    return True


def default_run_name(values: dict) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    bands = "-".join(values.get("bands", [])) or "none"
    return f"{stamp}_{values.get('size', '')}_{bands}"


def git_and_versions() -> dict:
    from inclinet_utils import io as iio

    return {"git_commit": iio.git_commit(REPO), "packages": iio.package_versions()}


def prepare_run_folder(run_dir: Path, values: dict, explicit: set[str], args, stages: list[str]) -> dict:
    """Create the run record, or load it for --resume; never overwrite an existing run."""
    from inclinet_utils import io as iio

    record_path = run_dir / "run.json"
    if run_dir.exists() and not args.resume:
        raise SystemExit(f"run folder {run_dir} already exists; pass --resume to continue it, "
                         "or choose another --run-name")
    if args.resume:
        if not record_path.is_file():
            raise SystemExit(f"--resume: {record_path} not found; nothing to resume")
        record = iio.read_json(record_path)
        recorded = record["parameters"]
        clash = {k: (recorded.get(k), values[k]) for k in explicit if recorded.get(k) != values[k]}
        if clash:
            raise SystemExit("--resume with parameters that differ from the recorded run: " +
                             ", ".join(f"{k}: recorded {a!r}, given {b!r}" for k, (a, b) in clash.items()))
        values.clear()
        values.update(recorded)
        record.setdefault("resumed_at", []).append(iio.now_iso())
        record.update(git_and_versions())
        return record
    (run_dir / "notebooks").mkdir(parents=True)
    return {
        "run_name": run_dir.name,
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "started_at": iio.now_iso(),
        "parameters": values,
        "preset": args.preset,
        "stages_requested": stages,
        "input": "real" if values.get("images_dir") else "simulated",
        **git_and_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "stages": {},
    }


def export_html(notebook_path: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    from inclinet_utils import io as iio

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook_path, as_version=4))
    return iio.write_text(notebook_path.with_suffix(".html"), body, overwrite=True)


def run_stage(stage: str, stage_params: dict, values: dict, run_dir: Path) -> None:
    import papermill

    out_nb = run_dir / "notebooks" / f"{stage}.ipynb"
    if out_nb.exists():  # a failed earlier attempt: keep it beside the new one
        stamp = dt.datetime.fromtimestamp(out_nb.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
        for suffix in (".ipynb", ".html"):
            old = out_nb.with_suffix(suffix)
            if old.exists():
                old.rename(old.with_name(f"{stage}.failed-{stamp}{suffix}"))
    params = {k: v for k, v in values.items() if k in stage_params}
    if "run_dir" in stage_params:
        params["run_dir"] = str(run_dir)
    try:
        papermill.execute_notebook(
            str(NOTEBOOKS / f"{stage}.ipynb"), str(out_nb), parameters=params,
            cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False,
            request_save_on_cell_execute=True,
        )
    finally:
        if out_nb.exists():
            export_html(out_nb)


def main(argv: list[str] | None = None) -> int:
    stages = discover_stages()
    stage_params = notebook_parameters(stages)
    args = build_parser(stage_params).parse_args(argv)
    values, explicit = effective_parameters(stage_params, args)
    real_input = check_real_input(values)
    selected = select_stages(stages, args, real_input)

    run_dir = args.output_root.resolve() / (args.run_name or default_run_name(values))
    record = prepare_run_folder(run_dir, values, explicit, args, selected)
    real_input = bool(values.get("images_dir"))
    if args.resume:
        selected = select_stages(stages, args, real_input)

    from inclinet_utils import io as iio

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # kernels inherit: keep TF's C++ chatter out
    iio.write_json(run_dir / "run.json", record, overwrite=True)
    print(f"run folder: {run_dir}")
    for stage in selected:
        entry = record["stages"].get(stage, {})
        if args.resume and entry.get("status") == "completed":
            print(f"[skip] {stage} (completed)")
            continue
        entry = {"status": "running", "started_at": iio.now_iso(),
                 "notebook": f"notebooks/{stage}.ipynb", "html": f"notebooks/{stage}.html"}
        record["stages"][stage] = entry
        iio.write_json(run_dir / "run.json", record, overwrite=True)
        print(f"[run ] {stage} ...", flush=True)
        t0 = time.perf_counter()
        try:
            run_stage(stage, stage_params[stage], values, run_dir)
        except BaseException as exc:  # also Ctrl-C: record it, then stop
            entry.update(status="failed", wall_s=round(time.perf_counter() - t0, 2),
                         error=_describe(exc))
            record["finished_at"] = iio.now_iso()
            iio.write_json(run_dir / "run.json", record, overwrite=True)
            print(f"\nstage {stage} FAILED: notebook {run_dir / entry['notebook']}\n{entry['error']}",
                  file=sys.stderr)
            return 130 if isinstance(exc, KeyboardInterrupt) else 1
        entry.update(status="completed", wall_s=round(time.perf_counter() - t0, 2))
        iio.write_json(run_dir / "run.json", record, overwrite=True)
        print(f"[done] {stage} in {entry['wall_s']:.1f} s", flush=True)
    record["finished_at"] = iio.now_iso()
    iio.write_json(run_dir / "run.json", record, overwrite=True)
    _print_summary(run_dir, record)
    return 0


def _describe(exc: BaseException) -> str:
    import papermill

    if isinstance(exc, papermill.PapermillExecutionError):
        return f"{exc.ename}: {exc.evalue} (cell {exc.exec_count})"
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _print_summary(run_dir: Path, record: dict) -> None:
    print("\nstage wall times:")
    for stage, entry in record["stages"].items():
        print(f"  {stage:<14} {entry['status']:<10} {entry.get('wall_s', 0):8.1f} s")
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        from inclinet_utils import io as iio
        from inclinet_utils.evaluate import summarize_metrics

        print("\n" + summarize_metrics(iio.read_json(metrics)))


if __name__ == "__main__":
    sys.exit(main())
