"""The pipeline at scale: `make bench-pipeline` (python -m bench.pipeline).

For each size (100k and 1M rows by default, ``--rows`` for others) a seeded table from
tools/synth (~10 features: numbers and categories, a few % missing) goes into a scratch DVC
project outside the work tree (git init, dvc init, this repo's src/, contract/, dvc.yaml,
.dvc/plots/ and params.yaml with ``prepare`` declared for the table), is tracked with
`dvc add`, and the whole `dvc repro` is timed with the default estimator and params.

Measured per size, in the same run:
  each stage's wall time and peak RSS (the ``<stage> done in X s, peak RSS Y MB`` line every
  stage logs), each stage process's whole life (psutil, polled: interpreter start-up and
  imports included) and DVC's own share (the rest of `dvc repro`: its start-up, hashing, cache
  copies, lock writing);
  the baseline: the same estimator's bare ``fit`` (same class, hyper-parameters and n_jobs) on
  the run's own model inputs (data/features/train.parquet), in a fresh process;
  the artifact's size and its members'.
Targets at 1M rows are reported reached or not, never asserted.
Results: bench/results/pipeline.json, bench/results/pipeline.md and the README block.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench import fill_readme

log = logging.getLogger("lockserve.bench")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
STAGES = ("prepare", "featurize", "train", "evaluate")
DONE = re.compile(r"lockserve\.pipeline: (\w+) done in ([\d.]+) s, peak RSS (\d+) MB")
STAGE_CMD = re.compile(r"-m src\.(\w+)")
RAW = Path("data/raw/synth.csv")
TARGET = "target"
TASKS = {"binary": "classification", "multiclass": "classification", "regression": "regression"}
MARGIN = 0.1  # declared number ranges: the seen range widened by this share on each side
POLL_S = 0.1
TARGET_ROWS = 1_000_000
README_START, README_END = "<!-- bench-pipeline:start -->", "<!-- bench-pipeline:end -->"
README_AFTER = "### Benchmarks"
README_HEADING = "### Pipeline at scale"


def child_env() -> dict[str, str]:
    """The environment of every command: this virtualenv first, no DVC analytics."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
    }


def _cpu_s(who: int) -> float:
    """User + system CPU seconds of this process or of its waited-for descendants."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], cwd: Path, log_path: Path) -> float:
    """Run ``cmd`` in ``cwd``, its output appended to ``log_path``; return its wall seconds."""
    started = time.perf_counter()
    with open(log_path, "ab") as fh:
        fh.write(f"$ {' '.join(cmd)}\n".encode())
        fh.flush()
        done = subprocess.run(cmd, cwd=cwd, env=child_env(), stdout=fh, stderr=fh)
    if done.returncode:
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n" + "\n".join(tail))
    return time.perf_counter() - started


def declarations(table: Path, task: str) -> dict[str, dict[str, Any]]:
    """``prepare.columns`` for the table: numbers with their seen range widened by MARGIN,
    categories with their seen levels, each nullable where a value is missing."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv

    from src.tables import NA_VALUES

    data = csv.read_csv(
        table, convert_options=csv.ConvertOptions(null_values=NA_VALUES, strings_can_be_null=True)
    )
    columns: dict[str, dict[str, Any]] = {}
    for name in data.column_names:
        col = data.column(name)
        nullable = col.null_count > 0
        numeric = pa.types.is_floating(col.type) or pa.types.is_integer(col.type)
        if name == TARGET:
            numeric = task == "regression"
        if numeric:
            lo, hi = (float(v.as_py()) for v in pc.min_max(col).values())
            pad = MARGIN * ((hi - lo) or 1.0)
            columns[name] = {
                "type": "number",
                "min": math.floor((lo - pad) * 100) / 100,
                "max": math.ceil((hi + pad) * 100) / 100,
                "nullable": nullable,
            }
        else:
            levels = sorted({str(v) for v in pc.unique(col.drop_null()).to_pylist()})
            columns[name] = {"type": "category", "categories": levels, "nullable": nullable}
    return columns


def scratch_project(project: Path, table: Path, task: str) -> dict[str, float]:
    """A DVC project in ``project`` running this repo's pipeline on ``table``; `dvc add` timed."""
    logs = project.parent / "setup.log"
    run(["git", "init", "-q", str(project)], project.parent, logs)
    run(["dvc", "init", "-q"], project, logs)
    # as this repo's .dvc/config: `dvc repro` stages dvc.lock and the .gitignore files in git
    run(["dvc", "config", "core.autostage", "true"], project, logs)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("src", "contract"):
        shutil.copytree(ROOT / part, project / part, ignore=ignore)
    shutil.copytree(ROOT / ".dvc" / "plots", project / ".dvc" / "plots", dirs_exist_ok=True)
    shutil.copy2(ROOT / "dvc.yaml", project / "dvc.yaml")
    columns = declarations(table, task)
    features = [name for name in columns if name != TARGET]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"].update(
        data=str(RAW),
        target=TARGET,
        task=task,
        columns=columns,
        features=features,
        max_missing_features=max(1, len(features) // 3),
    )
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / RAW).parent.mkdir(parents=True)
    shutil.move(table, project / RAW)
    return {"dvc_add_s": round(run(["dvc", "add", "-q", str(RAW)], project, logs), 2)}


class Watch(threading.Thread):
    """Polls a process tree: each stage process's start, end and largest RSS, and the root's."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.stages: dict[str, dict[str, float]] = {}
        self.root_rss = 0
        self.finished = threading.Event()

    def run(self) -> None:
        named: dict[int, str | None] = {}
        while not self.finished.is_set():
            now = time.time()
            try:
                self.root_rss = max(self.root_rss, self.root.memory_info().rss)
                children = self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for proc in children:
                try:
                    if proc.pid not in named:
                        match = STAGE_CMD.search(" ".join(proc.cmdline()))
                        named[proc.pid] = match.group(1) if match else None
                    stage = named[proc.pid]
                    if stage is None:
                        continue
                    # first and last seen, each within half a poll of the truth (psutil's
                    # create_time() counts from a boot time rounded to the second)
                    seen = self.stages.setdefault(stage, {"start": now - POLL_S / 2, "rss": 0})
                    seen["end"] = now + POLL_S / 2
                    seen["rss"] = max(seen["rss"], proc.memory_info().rss)
                except psutil.NoSuchProcess:
                    continue
            time.sleep(POLL_S)


def repro(project: Path) -> dict[str, Any]:
    """Time the whole `dvc repro`; per stage, its logged time and RSS and its process's life."""
    log_path = project.parent / "repro.log"
    load = os.getloadavg()[0]
    cpu = _cpu_s(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen(
            ["dvc", "repro"], cwd=project, env=child_env(), stdout=fh, stderr=fh
        )
        watch = Watch(proc.pid)
        watch.start()
        code = proc.wait()
    total = time.perf_counter() - started
    cpu = _cpu_s(resource.RUSAGE_CHILDREN) - cpu
    watch.finished.set()
    watch.join()
    text = log_path.read_text(errors="replace")
    if code:
        raise RuntimeError(f"dvc repro failed in {project}:\n" + "\n".join(text.splitlines()[-30:]))
    logged = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in DONE.finditer(text)}
    stages = {}
    for name in STAGES:
        seconds, rss = logged[name]
        seen = watch.stages.get(name, {})
        stages[name] = {
            "s": seconds,
            "peak_rss_mb": rss,
            "process_s": round(seen["end"] - seen["start"], 2) if seen else None,
            "process_rss_mb": round(seen["rss"] / 1e6) if seen else None,
        }
    in_stages = sum(s["s"] for s in stages.values())
    in_processes = sum(s["process_s"] or s["s"] for s in stages.values())
    return {
        "repro_s": round(total, 2),
        "repro_cpu_s": round(cpu, 1),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "stages": stages,
        "stages_s": round(in_stages, 2),
        "dvc_share_s": round(total - in_stages, 2),
        "stage_startup_s": round(in_processes - in_stages, 2),
        "dvc_own_s": round(total - in_processes, 2),
        "dvc_rss_mb": round(watch.root_rss / 1e6),
    }


def bare_fit(project: Path) -> dict[str, Any]:
    """The baseline: `python -m bench.pipeline --bare-fit PROJECT` in a fresh process."""
    out = project.parent / "bare_fit.json"
    wall = run(
        [sys.executable, "-m", "bench.pipeline", "--bare-fit", str(project), "--out", str(out)],
        ROOT,
        project.parent / "bare_fit.log",
    )
    return {**json.loads(out.read_text()), "process_s": round(wall, 2)}


def bare_fit_child(project: Path, out: Path) -> None:
    """Fit the estimator train.params names, as sklearn alone, on the run's model inputs."""
    import numpy as np
    import pandas as pd

    from src.estimators import ESTIMATORS

    params = yaml.safe_load((project / "params.yaml").read_text())["train"]
    schema = json.loads((project / "data/prepared/schema.json").read_text())
    name, task, target = params["estimator"], schema["task"], schema["target"]
    started = time.perf_counter()
    frame = pd.read_parquet(project / "data/features/train.parquet")
    # float32, as the train stage fits (and as the trees compute anyway)
    x, y = frame.drop(columns=[target]).to_numpy(np.float32), frame[target].to_numpy()
    del frame
    read_s = time.perf_counter() - started
    estimator = ESTIMATORS[name][task](params["seed"], params["n_jobs"], dict(params[name] or {}))
    cpu = _cpu_s(resource.RUSAGE_SELF)
    started = time.perf_counter()
    estimator.fit(x, y)
    fit_s = time.perf_counter() - started
    fit_cpu_s = _cpu_s(resource.RUSAGE_SELF) - cpu
    result = {
        "estimator": type(estimator).__name__,
        "hyper_parameters": {**(params[name] or {}), "n_jobs": params["n_jobs"]},
        "rows": int(x.shape[0]),
        "inputs": int(x.shape[1]),
        "read_s": round(read_s, 2),
        "fit_s": round(fit_s, 2),
        "fit_cpu_s": round(fit_cpu_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")


def artifact_sizes(project: Path) -> dict[str, float]:
    """The artifact's size and its members', in MB."""
    path = project / "models" / "model.zip"
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: round(i.file_size / 1e6, 2) for i in zf.infolist()}
    return {"mb": round(path.stat().st_size / 1e6, 2), "members_mb": members}


def bench_case(rows: int, features: int, task: str, workdir: Path) -> dict[str, Any]:
    """Generate, set up and reproduce one table; measure it against the bare fit."""
    case = workdir / f"{task}-{rows}"
    if case.exists():
        shutil.rmtree(case)
    case.mkdir(parents=True)
    table = case / "synth.csv"
    log.info("%s, %d rows x %d features: generating %s", task, rows, features, table)
    cmd = [sys.executable, "-m", "tools.synth", str(table), "--rows", str(rows)]
    generate_s = run([*cmd, "--features", str(features), "--task", task], ROOT, case / "setup.log")
    project = case / "project"
    project.mkdir()
    setup = scratch_project(project, table, TASKS[task])
    log.info("dvc repro in %s", project)
    result = repro(project)
    log.info("bare fit in a fresh process")
    baseline = bare_fit(project)
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    stages = result["stages"]
    out = {
        "rows": rows,
        "features": features,
        "task": task,
        "table_mb": round((project / RAW).stat().st_size / 1e6, 1),
        "generate_s": round(generate_s, 2),
        **setup,
        **result,
        "bare_fit": baseline,
        "repro_vs_fit": round(result["repro_s"] / baseline["fit_s"], 2),
        "max_stage_rss_mb": max(s["peak_rss_mb"] for s in stages.values()),
        "artifact": artifact_sizes(project),
        "metrics": metrics,
    }
    log.info("%s", json.dumps(out))
    return out


def targets(case: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets at 1M rows: measured figure, limit, reached."""
    stages = case["stages"]
    fit = case["bare_fit"]["fit_s"]
    heaviest = max(stages, key=lambda name: stages[name]["peak_rss_mb"])
    rows = [
        (
            "whole `dvc repro` ≤ 1.5 × bare fit",
            case["repro_vs_fit"] <= 1.5,
            f"{case['repro_vs_fit']:.2f}× ({case['repro_s']:.1f} s vs fit {fit:.1f} s)",
        ),
        (
            "peak RSS of any stage ≤ 2 GB",
            case["max_stage_rss_mb"] <= 2000,
            f"{case['max_stage_rss_mb']:.0f} MB ({heaviest})",
        ),
        (
            "artifact ≤ 50 MB",
            case["artifact"]["mb"] <= 50,
            f"{case['artifact']['mb']:.1f} MB",
        ),
        (
            "evaluate ≤ train",
            stages["evaluate"]["s"] <= stages["train"]["s"],
            f"evaluate {stages['evaluate']['s']:.1f} s, train {stages['train']['s']:.1f} s",
        ),
    ]
    return [{"target": t, "reached": ok, "measured": m} for t, ok, m in rows]


def _human(rows: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if rows >= size and rows % size == 0:
            return f"{rows // size}{suffix}"
    return str(rows)


def table(result: dict[str, Any]) -> str:
    cases, meta_date = result["cases"], result["meta"]["date"]
    lines = [
        "| rows | task | prepare | featurize | train | evaluate | DVC share | `dvc repro` | "
        "bare fit | × fit | artifact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        cells = [
            f"{c['stages'][name]['s']:.1f} s, {c['stages'][name]['peak_rss_mb']:.0f} MB"
            for name in STAGES
        ]
        lines.append(
            f"| {_human(c['rows'])} | {c['task']} | {' | '.join(cells)} | "
            f"{c['dvc_share_s']:.1f} s | {c['repro_s']:.1f} s | {c['bare_fit']['fit_s']:.1f} s | "
            f"{c['repro_vs_fit']:.2f} | {c['artifact']['mb']:.1f} MB |"
        )
    lines.append("")
    for c in cases:
        b = c["bare_fit"]
        metric = (
            f"accuracy {c['metrics']['accuracy']}"
            if "accuracy" in c["metrics"]
            else f"R² {c['metrics'].get('r2')}"
        )
        lines.append(
            f"- {_human(c['rows'])} {c['task']}: DVC share {c['dvc_share_s']:.1f} s = stage "
            f"processes' start-up and imports {c['stage_startup_s']:.1f} s + DVC itself "
            f"{c['dvc_own_s']:.1f} s (its start-up, hashing, cache copies, dvc.lock; peak RSS "
            f"{c['dvc_rss_mb']} MB); bare fit: {b['estimator']} on {b['rows']:,} rows × "
            f"{b['inputs']} inputs, {b['fit_s']:.1f} s, peak RSS {b['peak_rss_mb']} MB; "
            f"CPU time: `dvc repro` {c['repro_cpu_s']:.0f} s (every process), bare fit "
            f"{b['fit_cpu_s']:.0f} s; load average {c['load_before']:.1f} before `dvc repro`, "
            f"{c['load_after']:.1f} after; `dvc add` of the {c['table_mb']:.0f} MB CSV "
            f"{c['dvc_add_s']:.1f} s (not in `dvc repro`); test {metric}"
            + (f"; measured {c['date']}." if c.get("date", meta_date) != meta_date else ".")
        )
    at_target = [c for c in cases if c["rows"] == TARGET_ROWS]
    for c in at_target:
        lines += [
            "",
            f"Targets at {_human(c['rows'])} rows × {c['features']} features ({c['task']}):",
            "",
            "| target | reached | measured |",
            "|---|---|---|",
        ]
        lines += [
            f"| {t['target']} | {'yes' if t['reached'] else 'no'} | {t['measured']} |"
            for t in c["targets"]
        ]
    return "\n".join(lines)


def write(result: dict[str, Any]) -> str:
    meta = result["meta"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    largest = max((c["rows"] for c in result["cases"]), default=0)
    skipped = (
        ""
        if largest >= 10 * TARGET_ROWS
        else ' 10M rows is not in this run (`make bench-pipeline ROWS="100000 1000000 '
        '10000000"` adds it).'
    )
    text = (
        f"{table(result)}\n\nStage cells: the stage's own time and peak RSS (its log line); "
        f"DVC share: `dvc repro` wall time minus the stages' own time. params.yaml's train "
        f"section ({meta['train']}), {meta['features']} features, CSV raw table; "
        f"{meta['cores']} cores, DVC {meta['dvc']}, scikit-learn "
        f"{meta['sklearn']}, {meta['date']}.{skipped}"
    )
    (RESULTS / "pipeline.md").write_text(text + "\n")
    if not fill_readme("bench-pipeline", text):
        readme = ROOT / "README.md"
        readme.write_text(_insert_section(readme.read_text(), text))
    return text


def _insert_section(content: str, text: str) -> str:
    """Add a "Pipeline at scale" subsection after the "### Benchmarks" section."""
    section = (
        f"{README_HEADING}\n\n"
        "`make bench-pipeline` runs `bench/pipeline.py`: for each size, a seeded table from\n"
        "`tools/synth` in a scratch DVC project outside the work tree (this repo's `src/`,\n"
        "`contract/`, `dvc.yaml`, and `params.yaml` with `prepare` declared for the table), the\n"
        "whole `dvc repro` timed against the same estimator's bare `fit` on the same model inputs\n"
        "in a fresh process, in the same run. Results: `bench/results/pipeline.json`,\n"
        "`bench/results/pipeline.md`, and this table:\n\n"
        f"{README_START}\n{text}\n{README_END}\n\n"
    )
    start = content.find(f"\n{README_AFTER}\n")
    if start < 0:
        return content.rstrip("\n") + "\n\n" + section
    following = re.search(r"^#{1,3} ", content[start + len(README_AFTER) + 2 :], re.MULTILINE)
    if following is None:
        return content.rstrip("\n") + "\n\n" + section
    at = start + len(README_AFTER) + 2 + following.start()
    return content[:at] + section + content[at:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--task", choices=tuple(TASKS), default="multiclass")
    parser.add_argument(
        "--regression-rows",
        type=int,
        nargs="*",
        default=[1_000_000],
        help="sizes also run with a regression target (none: no regression run)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="where the scratch projects go (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch projects")
    parser.add_argument("--bare-fit", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.bare_fit:
        bare_fit_child(args.bare_fit, args.out)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lockserve-bench-pipeline-"))
    if workdir.resolve().is_relative_to(ROOT):
        parser.error("--workdir must be outside the work tree")
    plan = [(rows, args.task) for rows in args.rows]
    plan += [(rows, "regression") for rows in args.regression_rows if args.task != "regression"]
    plan.sort(key=lambda case: (case[0], case[1] == "regression"))  # smallest first
    result: dict[str, Any] = {"meta": meta(args.features), "cases": []}
    result["cases"] = earlier_cases(plan, result["meta"])
    try:
        for rows, task in plan:
            case = bench_case(rows, args.features, task, workdir)
            case["date"] = result["meta"]["date"]
            if rows == TARGET_ROWS:
                case["targets"] = targets(case)
            result["cases"].append(case)
            result["cases"].sort(key=lambda c: (c["rows"], c["task"] == "regression"))
            write(result)  # after each size: a later failure keeps the figures so far
            if not args.keep:
                shutil.rmtree(workdir / f"{task}-{rows}")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    log.info("%s", write(result))


def earlier_cases(plan: list[tuple[int, str]], now: dict[str, Any]) -> list[dict[str, Any]]:
    """Sizes this run leaves out (10M takes half an hour) keep the figures of the last run that
    measured them, each with its own bare fit and date, if the estimator and versions match."""
    try:
        earlier = json.loads((RESULTS / "pipeline.json").read_text())
    except (OSError, ValueError):
        return []
    same = ("features", "train", "dvc", "sklearn", "cores")
    if any(earlier["meta"].get(k) != now[k] for k in same):
        return []
    planned = set(plan)
    kept = [c for c in earlier["cases"] if (c["rows"], c["task"]) not in planned]
    for case in kept:
        case.setdefault("date", earlier["meta"]["date"])
    return kept


def meta(features: int) -> dict[str, Any]:
    """The machine and the versions the figures come from."""
    import sklearn

    dvc = subprocess.run(
        ["dvc", "--version"], env=child_env(), capture_output=True, text=True, check=True
    )
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
        "python": platform.python_version(),
        "dvc": dvc.stdout.strip(),
        "sklearn": sklearn.__version__,
        "features": features,
        "train": _estimator(yaml.safe_load((ROOT / "params.yaml").read_text())["train"]),
    }


def _estimator(train: dict[str, Any]) -> str:
    """``random_forest n_estimators=100 ... n_jobs=-1``: the estimator train fits."""
    name = train["estimator"]
    hyper = " ".join(f"{k}={v}" for k, v in (train.get(name) or {}).items())
    return f"{name} {hyper} n_jobs={train['n_jobs']}".replace("  ", " ")


if __name__ == "__main__":
    main()
