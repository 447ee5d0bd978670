"""`make init DATA=<csv or parquet> TARGET=<column> [TASK=...]`: start from a user's table.

Copies the table under data/raw/ (unless it is there already), tracks it with DVC (`dvc add`),
infers the schema (src/infer.py) and writes it into params.yaml's ``prepare`` section, with the
artifact's name in ``artifact``. Logs what it inferred and what deserves a look. Everything is
checked before anything is written; params.yaml is replaced in one step.
"""

from __future__ import annotations

import argparse
import io
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from src.infer import Inferred, infer
from src.stage import PARAMS_FILE, StageError, main_wrapper, write_outputs
from src.tables import SUFFIXES, read_raw

log = logging.getLogger("lockserve.pipeline")

RAW_DIR = Path("data/raw")
KEPT = {"invalid_rows": "drop", "test_size": 0.2, "seed": 42}  # defaults when params lack them


def _scalar(value: Any) -> Any:
    """A string that YAML 1.1 (PyYAML, which the stages use) would read back as something else
    ("yes", "1.0", "null", "") is written double-quoted."""
    if isinstance(value, str):
        try:
            same = yaml.safe_load(value) == value
        except yaml.YAMLError:
            same = False
        if not same or value != value.strip():
            return DoubleQuotedScalarString(value)
    return value


def _flow(items: dict[str, Any]) -> CommentedMap:
    out = CommentedMap()
    for key, value in items.items():
        if isinstance(value, list):
            seq = CommentedSeq(_scalar(v) for v in value)
            seq.fa.set_flow_style()
            value = seq
        out[key] = _scalar(value)
    out.fa.set_flow_style()
    return out


def artifact_name(table: Path, task: str) -> str:
    """``<table stem>-classifier`` or ``-regressor``, as GTO names go (lowercase, dashes)."""
    stem = re.sub(r"[^a-z0-9]+", "-", table.stem.lower()).strip("-") or "model"
    if not stem[0].isalpha():
        stem = f"t-{stem}"
    return f"{stem}-{'classifier' if task == 'classification' else 'regressor'}"


def prepare_section(table: Path, target: str, found: Inferred, old: dict[str, Any]) -> CommentedMap:
    """The new ``prepare`` params: the table, the inferred schema, the row rules kept."""
    section = CommentedMap()
    section["data"] = str(table)
    section["target"] = _scalar(target)
    section["task"] = found.task
    columns = CommentedMap()
    for name, declaration in found.columns.items():
        columns[_scalar(name)] = _flow(declaration)
    section["columns"] = columns
    features = CommentedSeq(_scalar(f) for f in found.features)
    if sum(len(str(f)) + 2 for f in found.features) < 80:
        features.fa.set_flow_style()
    section["features"] = features
    section["max_missing_features"] = len(found.features) - 1
    for key, default in KEPT.items():
        section[key] = old.get(key, default)
    section.yaml_set_comment_before_after_key(
        "columns", before="Inferred by `make init`: check the ranges and categories.", indent=2
    )
    if found.excluded:
        left_out = "; ".join(f"{n}: {why}" for n, why in found.excluded.items())
        section.yaml_set_comment_before_after_key(
            "features", before=f"Left out: {left_out}", indent=2
        )
    section.yaml_set_comment_before_after_key(
        "max_missing_features",
        before="Rows missing more than this many feature values are dropped.",
        indent=2,
    )
    return section


def params_text(params_file: Path, section: CommentedMap, name: str, description: str) -> bytes:
    """params.yaml with ``prepare`` and ``artifact`` replaced, other sections and comments
    kept."""
    rt = YAML()
    rt.width = 100
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    doc = rt.load(params_file.read_text()) if params_file.exists() else CommentedMap()
    doc = doc if doc is not None else CommentedMap()
    doc["artifact"] = CommentedMap(name=name, description=_scalar(description))
    doc["prepare"] = section
    keys = list(doc)
    for replaced in ("artifact", "prepare"):  # a blank line after each replaced section
        following = keys.index(replaced) + 1
        if following < len(keys):
            doc.yaml_set_comment_before_after_key(keys[following], before="\n")
    buf = io.StringIO()
    rt.dump(doc, buf)
    return buf.getvalue().encode()


def dvc_add(path: Path) -> None:
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(".") as repo:
            repo.add(str(path))
    except DvcException as exc:
        raise StageError(f"dvc add {path} failed: {' '.join(str(exc).split())}") from None


def run(data: Path, target: str, task: str | None, params_file: Path = PARAMS_FILE) -> None:
    """Infer, copy, track and write params (see the module docstring)."""
    if data.suffix.lower() not in SUFFIXES:
        raise StageError(f"{data}: a table must be .csv or .parquet")
    if not data.is_file():
        raise StageError(f"{data}: no such file")
    frame, _ = read_raw(data)
    try:
        found = infer(frame, target, task)
    except ValueError as exc:
        raise StageError(str(exc)) from None
    table = RAW_DIR / data.name
    name = artifact_name(table, found.task)
    old = (yaml.safe_load(params_file.read_text()) or {}).get("prepare") or {}
    text = params_text(
        params_file,
        prepare_section(table, target, found, old),
        name,
        f"{found.task} of {target} from {data.name}",
    )
    if data.resolve() != table.resolve():
        table.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data, table)
        log.info("copied %s to %s", data, table)
    dvc_add(table)
    write_outputs({params_file: text})
    report(table, target, found, name)
    previous = Path(str(old.get("data", "")))
    if old.get("data") and previous != table and Path(f"{previous}.dvc").exists():
        log.info(
            "%s stays tracked by DVC; `git rm %s.dvc` when it is no longer needed",
            previous,
            previous,
        )


def report(table: Path, target: str, found: Inferred, name: str) -> None:
    """What was inferred and what deserves a look, one line each."""
    classes = found.columns[target].get("categories")
    log.info(
        "%s: %s of '%s'%s; artifact %s",
        table,
        found.task,
        target,
        f" ({len(classes)} classes: {classes[:10]})" if classes else "",
        name,
    )
    for column in found.features:
        decl = found.columns[column]
        if decl["type"] == "number":
            kind = f"number in [{decl['min']}, {decl['max']}]"
        else:
            cats = decl["categories"]
            kind = f"category, {len(cats)} values: {cats[:8]}{' ...' if len(cats) > 8 else ''}"
        log.info("  feature %s: %s%s", column, kind, ", nullable" if decl["nullable"] else "")
    for column, why in found.excluded.items():
        log.warning("  left out %s: %s", column, why)
    for note in found.notes:
        log.warning("  look: %s", note)
    log.info("next: make pipeline (dvc repro), then make serve; commit params.yaml, *.dvc")


def main() -> None:
    parser = argparse.ArgumentParser(prog="make init", description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the table: a .csv or .parquet file")
    parser.add_argument("target", help="the column to predict")
    parser.add_argument("--task", choices=["classification", "regression"], default=None)
    args = parser.parse_args()
    main_wrapper("init", lambda: run(args.data, args.target, args.task))


if __name__ == "__main__":
    main()
