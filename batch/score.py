"""Score a table with the model dvc.lock pins, on Dask: ``python -m batch.score INPUT OUTPUT``
(``make score INPUT=... OUTPUT=...``).

INPUT is a CSV or parquet file or folder, local or ``s3://`` (credentials and endpoint as for
the DVC remote: ``AWS_*`` in the environment). The client resolves the model the way the
service does (``LOCKSERVE_REPO``, ``--rev`` or ``LOCKSERVE_REV``, default HEAD: dvc.lock at that
rev, the object from the work tree, cache or remote, md5 verified) and sends the verified bytes
to the workers, which check the md5 again (no worker reads the client's disk or the remote).
Each partition is scored by :mod:`batch.rows`; OUTPUT is a parquet folder with the input's
rows in order (one file a partition, ``part.<n>.parquet``): the ``--keep`` columns (default:
all), the answer, ``error``; every file's key-value metadata names ``lockserve.md5``,
``lockserve.rev`` and ``lockserve.artifact``. Dask runs it: a ``LocalCluster`` of ``--workers``
processes by default, or the scheduler at ``--scheduler`` / ``DASK_SCHEDULER`` (any existing
cluster). A bad input or model fails in one line, exit 1, leaving OUTPUT as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pandas as pd
from fsspec.core import url_to_fs

from batch.rows import ERROR, Scorer, ScoringError, empty_answer, output_columns
from contract.values import NA_VALUES

log = logging.getLogger("lockserve.batch")

_SCORERS: dict[str, Scorer] = {}  # on each worker: md5 -> the model, built once


def score_partition(
    frame: pd.DataFrame, model: bytes, md5: str, keep: list[str], text: bool
) -> pd.DataFrame:
    """Runs on a worker: one partition scored by the model of ``md5`` (built on first use)."""
    scorer = _SCORERS.get(md5)
    if scorer is None:
        scorer = _SCORERS[md5] = Scorer(model, md5)
    return scorer(frame, keep, text)


def read(path: str, blocksize: str) -> tuple[Any, bool]:
    """The table as a Dask frame, and whether its values are text (CSV)."""
    import dask.dataframe as dd

    if path.lower().endswith(".csv") or path.lower().endswith(".csv.gz"):
        frame = dd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=NA_VALUES,
            blocksize=None if path.lower().endswith(".gz") else blocksize,
        )
        return frame, True
    return dd.read_parquet(path), False


@contextlib.contextmanager
def cluster(scheduler: str | None, workers: int) -> Iterator[Any]:
    """A client of the scheduler named, or of a local cluster of ``workers`` processes."""
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)  # its cluster's start and stop
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # never a fixed port
            scheduler_kwargs={"dashboard": False},
            host="127.0.0.1",
        ) as local,
        Client(local) as client,
    ):
        yield client


def score(
    input_path: str,
    output: str,
    resolved: Any,
    keep: list[str] | None,
    client: Any,
    blocksize: str = "64MB",
) -> int:
    """Score ``input_path`` into ``output`` with the verified model ``resolved``; the rows."""
    from distributed import progress

    probe = Scorer(resolved.data, resolved.md5)  # refuses a graphless model before any work
    frame, text = read(input_path, blocksize)
    absent = [n for n in probe.schema.names if n not in frame.columns]
    if absent:
        raise ScoringError(f"{input_path} has no column {', '.join(map(repr, absent))}")
    kept = list(frame.columns) if keep is None else keep
    unknown = [n for n in kept if n not in frame.columns]
    if unknown:
        raise ScoringError(f"--keep names {', '.join(map(repr, unknown))}, not in {input_path}")
    clash = sorted(set(kept) & {*output_columns(probe.schema), ERROR})
    if clash:
        raise ScoringError(
            f"{input_path} has column(s) {clash} that the answer adds: leave them out with --keep"
        )
    model = client.scatter(resolved.data, broadcast=True)
    meta = empty_answer(probe.schema, frame._meta[kept])
    scored = frame.map_partitions(
        score_partition, model, resolved.md5, kept, text, meta=meta, align_dataframes=False
    )
    metadata = {
        "lockserve.md5": resolved.md5,
        "lockserve.rev": resolved.rev,
        "lockserve.commit": resolved.commit,
        "lockserve.artifact": resolved.name,
    }
    fs, root = url_to_fs(output)
    # on a local disk the files are written beside OUTPUT and renamed into place when whole; an
    # object store has no rename, so there they are written in place and removed on failure
    local = "file" in fs.protocol
    partial = f"{root}.partial-{uuid.uuid4().hex[:12]}" if local else root
    try:
        written = scored.to_parquet(
            fs.unstrip_protocol(partial),
            write_index=False,
            compute=False,
            custom_metadata=metadata,
        )
        futures = client.compute([written, scored.map_partitions(len).sum()])
        progress(futures)
        rows = int(futures[1].result())
        futures[0].result()
        if local:
            os.rename(partial, root)
    except BaseException:
        if fs.exists(partial):
            fs.rm(partial, recursive=True)
        raise
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="CSV or parquet: a path or s3://bucket/key")
    parser.add_argument("output", help="the parquet folder to write (must not exist)")
    parser.add_argument("--rev", default=None, help="git rev whose dvc.lock pins the model")
    parser.add_argument("--keep", default=None, help="input columns to keep, comma-separated")
    parser.add_argument("--scheduler", default=os.environ.get("DASK_SCHEDULER"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--blocksize", default="64MB", help="CSV bytes per partition")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("aiobotocore", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from api.resolver import ResolutionError, resolve
    from api.settings import Settings

    try:
        settings = Settings()
        if _exists(args.output):
            raise ScoringError(f"{args.output} exists: choose a new output")
        rev = args.rev or settings.rev or "HEAD"
        resolved = resolve(
            settings.repo,
            rev,
            settings.artifact,
            settings.remote,
            settings.fetch_attempts,
            settings.fetch_backoff_s,
        )
        keep = None if args.keep is None else [c for c in args.keep.split(",") if c]
        with cluster(args.scheduler, args.workers) as client:
            rows = score(args.input, args.output, resolved, keep, client, args.blocksize)
    except (ScoringError, ResolutionError, OSError, ValueError) as exc:
        log.error("batch scoring failed: %s", " ".join(str(exc).split()))
        return 1
    log.info(
        "scored %d rows of %s with %s md5 %s (%s) into %s",
        rows,
        args.input,
        resolved.name,
        resolved.md5,
        resolved.rev,
        args.output,
    )
    return 0


def _exists(path: str) -> bool:
    fs, root = url_to_fs(path)
    return bool(fs.exists(root))


if __name__ == "__main__":
    sys.exit(main())
