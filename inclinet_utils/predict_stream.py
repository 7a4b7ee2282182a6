"""A survey prediction table, streamed chunk by chunk: locally, or over Dask workers; resumable.

`predict_table` returns the table in memory (small inputs). `write_table` writes
it to a .csv or .parquet file: every finished chunk is written atomically as
``<out>.parts/part-<NNNNNN>.csv`` (`layout`), and when all are there they are
streamed into `out` (atomically) and the parts folder is removed, so memory stays
flat in the number of images. An interrupted table is continued with
``resume=True``: chunks whose part exists are not measured again (the parts
folder's manifest must match the inputs). Locally, the next chunk's images are
decoded and prepared in a thread while the models measure the current one; with
a Dask client (`executor`), chunks go to the workers, each loading the models once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io as _io
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from . import io as iio
from . import layout
from .predict_rows import OK, Job, RunContext, find_jobs, load_chunk, measure_chunk, predict_loaded, run_context
from .predict_rows import run_models

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 256
TABLE_SUFFIXES = (".csv", ".parquet")
_DTYPES = {"file": str, "band": str, "status": str, "pgc": "Int64", "n_models": "int64", "disagree": bool}


def _chunks(jobs: list[Job], chunk_size: int) -> list[list[Job]]:
    return [jobs[k:k + chunk_size] for k in range(0, len(jobs), chunk_size)]


def _local_chunks(chunks: dict, ctx: RunContext):
    """(index, table) of each chunk in order, the next chunk's images prepared in a thread meanwhile."""
    models, size = run_models(ctx.run_dir)
    if [mf.row for mf, _ in models] != list(ctx.rows):
        raise RuntimeError(f"models of {ctx.run_dir} changed while predicting")
    keys = list(chunks)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare") as pool:
        pending = pool.submit(load_chunk, chunks[keys[0]], ctx, size) if keys else None
        for pos, k in enumerate(keys):
            rows, images = pending.result()
            if pos + 1 < len(keys):
                pending = pool.submit(load_chunk, chunks[keys[pos + 1]], ctx, size)
            yield k, predict_loaded(rows, images, ctx, models)


def _dask_chunks(chunks: dict, ctx: RunContext, client, window: int | None = None):
    """(index, table) of each chunk as Dask workers finish them; at most `window` chunks in flight."""
    from distributed import as_completed

    window = window or max(2, 2 * sum(client.nthreads().values()))
    todo = list(chunks.items())
    futures = {}

    def submit(k, jobs):
        fut = client.submit(measure_chunk, jobs, ctx, key=f"inclinet-predict-{_token(ctx, jobs)}-{k}",
                            retries=2)
        futures[fut.key] = k
        return fut

    running = as_completed([submit(k, j) for k, j in todo[:window]])
    todo = todo[window:]
    for fut in running:
        table = fut.result()
        k = futures.pop(fut.key)
        fut.release()
        if todo:
            running.add(submit(*todo.pop(0)))
        yield k, table


def _token(ctx: RunContext, jobs) -> str:
    return hashlib.sha1(repr((ctx.run_dir, ctx.rows, ctx.flips, [j.file for j in jobs])).encode()).hexdigest()[:12]


def _measure(chunks: dict, ctx: RunContext, client, progress: bool, n_images: int, done: int):
    bar = tqdm(total=n_images, initial=done, desc="predict", unit="image", disable=not progress, mininterval=1.0)
    source = _dask_chunks(chunks, ctx, client) if client is not None else _local_chunks(chunks, ctx)
    with bar:
        for k, table in source:
            bar.update(len(table))
            yield k, table


def predict_table(images, run_dir, catalog=None, bands=None, chunk_size: int = DEFAULT_CHUNK,
                  scheduler=None, flips: bool = True, progress: bool = True) -> pd.DataFrame:
    """The prediction table in memory: one row per (galaxy, band) image, status 'ok' or the reason.

    `images`: a folder, a file or a list of files; `catalog` (with a folder): its
    galaxies in `bands` (default: the bands the run trained on). `scheduler`: a
    Dask client, address or 'local' (`executor.dask_client`); None: this process.
    """
    from .executor import dask_client

    ctx = run_context(run_dir, flips)
    jobs = find_jobs(images, catalog, _catalog_bands(ctx, catalog, bands))
    chunks = dict(enumerate(_chunks(jobs, chunk_size)))
    with dask_client(scheduler) as client:
        parts = dict(_measure(chunks, ctx, client, progress, len(jobs), 0))
    return pd.concat([parts[k] for k in sorted(parts)], ignore_index=True) if parts \
        else pd.DataFrame(columns=ctx.columns)


def _catalog_bands(ctx: RunContext, catalog, bands):
    if catalog is None or bands:
        return bands
    from . import BANDS

    known = [b for b in BANDS if any(b in v for v in ctx.by_model.values())]
    return known or list(BANDS)


def _manifest(ctx: RunContext, jobs: list[Job], chunk_size: int) -> dict:
    digest = hashlib.sha1("\n".join(f"{j.file}|{j.band}|{j.pgc}|{j.status}" for j in jobs).encode()).hexdigest()
    return {"run_dir": str(Path(ctx.run_dir).resolve()), "members": list(ctx.rows), "flips": ctx.flips,
            "n_images": len(jobs), "chunk_size": chunk_size, "jobs_sha1": digest}


def _prepare_parts(out: Path, manifest: dict, resume: bool) -> tuple[Path, set[int]]:
    """The parts folder (created, or checked for a resume) and the chunks already written."""
    parts = layout.prediction_parts_dir(out)
    if parts.exists() and not resume:
        raise FileExistsError(f"{parts} holds an interrupted table; continue it with --resume "
                              "(resume=True) or remove it")
    manifest_path = parts / layout.PREDICT_MANIFEST
    if parts.exists():
        old = iio.read_json(manifest_path) if manifest_path.is_file() else {}
        if old != manifest:
            diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise ValueError(f"{parts} was written for other inputs (differs in {diff}); run with the same "
                             "run, images, catalog, bands and chunk size, or remove the folder")
        done = {k for p in parts.iterdir() if (k := layout.parse_prediction_part_name(p.name)) is not None}
        return parts, done
    parts.mkdir(parents=True)
    iio.write_json(manifest_path, manifest)
    return parts, set()


def write_table(images, run_dir, out, catalog=None, bands=None, chunk_size: int = DEFAULT_CHUNK,
                resume: bool = False, scheduler=None, flips: bool = True, progress: bool = True,
                on_chunk=None) -> dict:
    """Write the prediction table to `out` (.csv or .parquet) chunk by chunk; a summary dict.

    Refuses an existing `out`. `resume` continues an interrupted table
    (``<out>.parts``). `on_chunk(index, table)` is called after each chunk is
    written (progress hooks, tests). The summary counts rows and ok rows.
    """
    from .executor import dask_client

    out = Path(out)
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"output table {out}: expected a .csv or .parquet file name")
    if out.exists():
        raise FileExistsError(f"{out} already exists; refusing to overwrite it")
    ctx = run_context(run_dir, flips)
    jobs = find_jobs(images, catalog, _catalog_bands(ctx, catalog, bands))
    chunks = dict(enumerate(_chunks(jobs, chunk_size)))
    parts, done = _prepare_parts(out, _manifest(ctx, jobs, chunk_size), resume)
    if done:
        log.info("resuming %s: %d of %d chunks already written", out, len(done), len(chunks))
    todo = {k: v for k, v in chunks.items() if k not in done}
    n_done = sum(len(chunks[k]) for k in done if k in chunks)
    with dask_client(scheduler) as client:
        for k, table in _measure(todo, ctx, client, progress, len(jobs), n_done):
            iio.write_text(parts / layout.prediction_part_name(k), table.to_csv(index=False))
            if on_chunk is not None:
                on_chunk(k, table)
    n_ok = _combine(parts, sorted(chunks), out)
    shutil.rmtree(parts)
    return {"out": out, "n_rows": len(jobs), "n_ok": n_ok, "n_chunks": len(chunks), "resumed_chunks": len(done)}


def read_part(path) -> pd.DataFrame:
    """One part (or a CSV table) with the table's column types."""
    table = pd.read_csv(path, dtype={k: v for k, v in _DTYPES.items() if k != "disagree"})
    for col in ("file", "band", "status"):
        table[col] = table[col].fillna("")
    table["disagree"] = table["disagree"].astype(str).str.lower().eq("true")
    return table


def read_table(path, columns=None) -> pd.DataFrame:
    """A prediction table written by `write_table` (.csv or .parquet); `columns`: only these."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path, columns=columns)
    if columns is not None:
        return pd.read_csv(path, usecols=columns, dtype={c: str for c in ("file", "band", "status")})
    return read_part(path)


def _combine(parts: Path, chunk_ids: list[int], out: Path) -> int:
    """Stream the parts, in chunk order, into `out` atomically; the number of ok rows."""
    n_ok = 0
    with iio.atomic_path(out) as tmp:
        writer = None
        with contextlib.ExitStack() as stack:
            fh = stack.enter_context(open(tmp, "w", newline="")) if out.suffix.lower() == ".csv" else None
            for pos, k in enumerate(chunk_ids):
                path = parts / layout.prediction_part_name(k)
                if fh is not None:
                    text = path.read_text()
                    fh.write(text if pos == 0 else text.split("\n", 1)[1])
                    n_ok += int((read_part(_io.StringIO(text))["status"] == OK).sum())
                else:
                    table = read_part(path)
                    n_ok += int((table["status"] == OK).sum())
                    writer = _parquet_write(writer, table, tmp, stack)
    return n_ok


def _parquet_write(writer, table: pd.DataFrame, tmp: Path, stack):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("a .parquet table needs pyarrow (pip install pyarrow); or write a .csv") from exc
    if writer is None:
        schema = pa.Schema.from_pandas(table, preserve_index=False)
        writer = stack.enter_context(pq.ParquetWriter(tmp, schema))
    writer.write_table(pa.Table.from_pandas(table, schema=writer.schema, preserve_index=False))
    return writer
