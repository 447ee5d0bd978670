"""Score a table with the model dvc.lock pins, on Dask: ``python -m batch.score INPUT OUTPUT``
(``make score INPUT=... OUTPUT=...``).

INPUT is a CSV or parquet file or folder, local or ``s3://`` (credentials and endpoint as for
the DVC remote: ``AWS_*`` in the environment). The client resolves the model the way the
service does (``LOCKSERVE_REPO``, ``--rev`` or ``LOCKSERVE_REV``, default ``workspace`` as for
``make serve``: dvc.lock at that rev, the object from the work tree, cache or remote, md5
verified), checks the table's columns, and only then starts or joins a cluster and sends the
verified bytes to the workers, which check the md5 again (no worker reads the client's disk
or the remote). Each partition is scored by :mod:`batch.rows`; OUTPUT is a parquet folder with
the input's rows in order (one file a partition): the ``--keep`` columns (default: all), the
answer, ``error``; every file's key-value metadata names ``lockserve.md5``, ``lockserve.rev``,
``lockserve.artifact`` and, for a committed rev, ``lockserve.commit``. Dask runs it: a
``LocalCluster`` of ``--workers`` processes by default, or the scheduler at ``--scheduler`` /
``DASK_SCHEDULER`` (any existing cluster whose scheduler and workers can import this code). A
bad input, model or cluster fails in one line, exit 1, leaving OUTPUT as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
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


def read(path: str, blocksize: str | int | None) -> tuple[Any, bool]:
    """The table as a Dask frame, and whether its values are text (CSV). A CSV is split into
    blocks of ``blocksize`` bytes (None or 0: one partition a file)."""
    import dask.dataframe as dd

    try:
        if path.lower().endswith((".csv", ".csv.gz")):
            whole = path.lower().endswith(".gz") or not blocksize or blocksize == "0"
            frame = dd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_values=NA_VALUES,
                blocksize=None if whole else blocksize,
            )
            return frame, True
        return dd.read_parquet(path), False
    except (OSError, ValueError) as exc:
        # Dask wraps the reader's error: "... registered to the pandas backend. Original Message:"
        reason = str(exc).split("Original Message:")[-1].strip()
        raise ScoringError(f"cannot read {path}: {reason}") from None


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
            dashboard_address="127.0.0.1:0",  # never a fixed port, never beyond loopback
            scheduler_kwargs={"dashboard": False},
            host="127.0.0.1",
            silence_logs=logging.CRITICAL,  # a worker's failure is this command's one line
        ) as local,
        Client(local) as client,
    ):
        yield client


class Job:
    """A table checked against the model before any cluster starts: its columns, the ones to
    keep, and the scored frame Dask will compute."""

    def __init__(
        self, input_path: str, resolved: Any, keep: list[str] | None, blocksize: Any = "64MB"
    ) -> None:
        probe = Scorer(resolved.data, resolved.md5)  # refuses a graphless model before any work
        self.input, self.resolved, self.schema = input_path, resolved, probe.schema
        self.frame, self.text = read(input_path, blocksize)
        columns = list(self.frame.columns)
        absent = [n for n in self.schema.names if n not in columns]
        if absent:
            raise ScoringError(f"{input_path} has no column {', '.join(map(repr, absent))}")
        self.kept = columns if keep is None else keep
        unknown = [n for n in self.kept if n not in columns]
        if unknown:
            raise ScoringError(f"--keep names {', '.join(map(repr, unknown))}, not in {input_path}")
        clash = sorted(set(self.kept) & {*output_columns(self.schema), ERROR})
        if clash:
            raise ScoringError(
                f"{input_path} has column(s) {clash} that the answer adds: leave them out with "
                "--keep"
            )

    def metadata(self) -> dict[str, str]:
        """What each output file records of the model (no commit for the work tree's lock)."""
        r = self.resolved
        out = {"lockserve.md5": r.md5, "lockserve.rev": r.rev, "lockserve.artifact": r.name}
        if r.rev != "workspace":
            out["lockserve.commit"] = r.commit
        return out

    def run(self, client: Any, output: str, show_progress: bool = False) -> tuple[int, int]:
        """Score into ``output`` on ``client``'s cluster: (rows, rows refused)."""
        from distributed import progress

        _workers_import_batch(client)
        model = client.scatter(self.resolved.data, broadcast=True)
        meta = empty_answer(self.schema, self.frame._meta[self.kept])
        scored = self.frame.map_partitions(
            score_partition,
            model,
            self.resolved.md5,
            self.kept,
            self.text,
            meta=meta,
            align_dataframes=False,
        )
        fs, root = url_to_fs(output)
        # on a local disk the files are written beside OUTPUT and renamed into place when
        # whole; an object store has no rename, so there they are written in place and
        # removed on failure
        local = "file" in fs.protocol
        partial = f"{root}.partial-{uuid.uuid4().hex[:12]}" if local else root
        try:
            written = scored.to_parquet(
                fs.unstrip_protocol(partial),
                write_index=False,
                compute=False,
                custom_metadata=self.metadata(),
            )
            futures = client.compute(
                [written, scored.map_partitions(len).sum(), scored[ERROR].count()]
            )
            if show_progress:
                progress(futures)
            try:
                rows, refused = int(futures[1].result()), int(futures[2].result())
                futures[0].result()
            except ValueError as exc:  # the CSV reader's, raised on a worker
                raise ScoringError(_csv_problem(self.input, exc)) from None
            if local:
                os.rename(partial, root)
        except BaseException:
            if fs.exists(partial):
                fs.rm(partial, recursive=True)
            raise
        return rows, refused


def score(
    input_path: str,
    output: str,
    resolved: Any,
    keep: list[str] | None,
    client: Any,
    blocksize: str = "64MB",
) -> int:
    """Score ``input_path`` into ``output`` with the verified model ``resolved``; the rows."""
    return Job(input_path, resolved, keep, blocksize).run(client, output)[0]


def _workers_import_batch(client: Any) -> None:
    """Refuse, in one line, a cluster whose scheduler or workers cannot import this code."""
    from importlib.util import find_spec

    try:
        client.run_on_scheduler(find_spec, "batch.rows")
        client.run(find_spec, "batch.rows")
    except ImportError as exc:
        raise ScoringError(
            f"the Dask cluster cannot import lockserve's batch code ({exc}): start its "
            "scheduler and workers from a checkout of this repo (PYTHONPATH) with "
            "requirements/batch.lock installed"
        ) from None


def _csv_problem(path: str, exc: Exception) -> str:
    message = " ".join(str(exc).split())
    if "EOF inside string" in message:
        return (
            f"{path}: {message} (a line counted within one block; a quoted cell that spans "
            "lines can straddle blocks: score it with --blocksize 0, one partition a file)"
        )
    if "Expected" in message:
        return f"{path}: {message} (a line counted within one block of --blocksize bytes)"
    return f"{path}: {message}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="CSV or parquet: a path or s3://bucket/key")
    parser.add_argument("output", help="the parquet folder to write (must not exist)")
    parser.add_argument(
        "--rev", default=None, help="git rev whose dvc.lock pins the model (default: workspace)"
    )
    parser.add_argument("--keep", default=None, help="input columns to keep, comma-separated")
    parser.add_argument("--scheduler", default=os.environ.get("DASK_SCHEDULER"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--blocksize", default="64MB", help="CSV bytes per partition (0: one partition a file)"
    )
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _main(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("aiobotocore", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from api.resolver import ResolutionError, resolve
    from api.settings import Settings

    try:
        settings = Settings()
        if _exists(args.output):
            raise ScoringError(f"{args.output} exists: choose a new output")
        rev = args.rev or settings.rev or "workspace"
        resolved = resolve(
            settings.repo,
            rev,
            settings.artifact,
            settings.remote,
            settings.fetch_attempts,
            settings.fetch_backoff_s,
        )
        keep = None if args.keep is None else [c.strip() for c in args.keep.split(",") if c]
        job = Job(args.input, resolved, keep, args.blocksize)  # checked before any cluster
        with cluster(args.scheduler, args.workers) as client:
            logging.getLogger("distributed").setLevel(logging.CRITICAL)  # errors: ours, 1 line
            rows, refused = job.run(client, args.output, show_progress=sys.stdout.isatty())
    except (ScoringError, ResolutionError, OSError, ValueError) as exc:
        log.error("batch scoring failed: %s", " ".join(str(exc).split()))
        return 1
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (below): what was written is removed
        log.error("batch scoring stopped: nothing written to %s", args.output)
        return 130
    log.info(
        "scored %d rows of %s (%d refused, their reasons in `error`) with %s md5 %s (%s) into %s",
        rows,
        args.input,
        refused,
        resolved.name,
        resolved.md5,
        resolved.rev,
        args.output,
    )
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM unwinds as Ctrl-C does, so a half-written output is removed."""
    raise KeyboardInterrupt


def _exists(path: str) -> bool:
    fs, root = url_to_fs(path)
    return bool(fs.exists(root))


if __name__ == "__main__":
    sys.exit(main())
