"""`make retrain` (``python -m tools.retrain [--stage NAME]``): train on the newest raw data and
promote the model only when it is no worse than the one a GTO stage holds.

Owns the promotion, in this order, each step only after the previous one succeeded:

1. checks: the repository's root, a branch checked out, a git identity, no tracked file changed
   but the pipeline's own data files (``*.dvc``, ``dvc.lock``, the metrics and plot tables),
   the ``retrain`` params (tools/retrain_gate.py), the GTO stage and the next version's tag;
2. the raw table params.yaml's ``prepare.data`` names: an import is ``dvc update``d; a table
   missing from the work tree is pulled (tools/data.py); a new version dropped into the work
   tree is ``dvc add``ed; a copy an earlier commit pinned is replaced by the pinned one;
3. ``dvc repro``;
4. the gate: the new metrics against those at the commit GTO says holds ``<artifact>#<stage>``
   (the same model: nothing to promote; no model there yet: passes);
5. past the gate: ``dvc push`` to the default remote (when one is configured), one commit of
   the changed pipeline files, a new GTO version at it, the stage assigned to that version.

Exit codes: 0 promoted or nothing to promote; 1 the gate refused (the stage and the commits
stay as they were; the reproduced files stay uncommitted); 2 an error before anything was
committed; 3 committed and registered but the stage not moved (the line says what to run).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tools import data as raw_data
from tools.retrain_gate import GateError, Settings, Verdict, flatten, judge, next_version, settings

log = logging.getLogger("lockserve.retrain")

OK, REFUSED, FAILED, PARTIAL = 0, 1, 2, 3
PARAMS = Path("params.yaml")
LOCK = "dvc.lock"
HISTORY = 200  # earlier pins of the raw table's .dvc file looked at to tell a stale copy


class RetrainError(Exception):
    """Retraining stopped; the message is one line, ``code`` the exit code."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def git(root: Path, *args: str, check: bool = True) -> str:
    """``git args`` in ``root``; its stdout. A failure raises RetrainError with git's message."""
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        said = one_line(proc.stderr or proc.stdout) or f"exit {proc.returncode}"
        raise RetrainError(f"git {args[0]}: {said}")
    return proc.stdout


def git_ok(root: Path, *args: str) -> bool:
    return (
        subprocess.run(["git", *args], cwd=root, capture_output=True, check=False).returncode == 0
    )


@dataclass(frozen=True)
class Holder:
    """The version a GTO stage is assigned to, and its commit."""

    version: str
    commit: str

    def named(self, artifact: str) -> str:
        return f"{artifact}@{self.version} ({self.commit[:12]})"


# -- checks ------------------------------------------------------------------------------------


def check_repository(root: Path) -> str:
    """The branch HEAD is on; RetrainError when ``root`` cannot take a promotion commit."""
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True
    )
    if top.returncode != 0:
        raise RetrainError(f"{root.resolve()} is not a git repository")
    if Path(top.stdout.strip()).resolve() != root.resolve():
        raise RetrainError(f"run it from the repository's root, {top.stdout.strip()}")
    if not git_ok(root, "rev-parse", "-q", "--verify", "HEAD^{commit}"):
        raise RetrainError("the repository has no commit yet")
    branch = git(root, "symbolic-ref", "-q", "--short", "HEAD", check=False).strip()
    if not branch:
        raise RetrainError("HEAD is detached: check out the branch the new version goes on")
    if not git_ok(root, "var", "GIT_COMMITTER_IDENT"):
        raise RetrainError("git has no user.name and user.email: the commit and tags need them")
    return branch


def changed_paths(root: Path, untracked: bool, *pathspecs: str) -> list[str]:
    """Paths ``git status`` reports changed (staged or not), optionally with untracked ones."""
    out = git(
        root,
        "status",
        "--porcelain=v1",
        "-z",
        f"--untracked-files={'all' if untracked else 'no'}",
        "--",
        *pathspecs,
    )
    fields, paths = out.split("\0"), []
    i = 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # a rename's or copy's source follows
            i += 1
    return paths


def pipeline_files(repo: Any, root: Path) -> set[str]:
    """Tracked files the pipeline itself writes: dvc.lock and each out DVC leaves to git
    (metrics and plot tables, ``cache: false``)."""
    files = {LOCK}
    for out in repo.index.outs:
        if not out.use_cache:
            files.add(Path(os.path.relpath(out.fs_path, root)).as_posix())
    return files


def out_dirs(repo: Any, root: Path) -> set[str]:
    """Folders holding an out DVC caches (DVC keeps a .gitignore there)."""
    return {
        Path(os.path.relpath(out.fs_path, root)).parent.as_posix()
        for out in repo.index.outs
        if out.use_cache
    }


def is_data(path: str, pipeline: set[str], dirs: set[str]) -> bool:
    """A change that is data, not code: the pipeline's files, a .dvc file, or the .gitignore
    DVC keeps beside the outs it caches."""
    where = Path(path)
    if where.name == ".gitignore":
        return where.parent.as_posix() in dirs
    return path in pipeline or where.name.endswith(".dvc")


def check_clean(root: Path, pipeline: set[str], dirs: set[str]) -> None:
    others = [p for p in changed_paths(root, False) if not is_data(p, pipeline, dirs)]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise RetrainError(
            f"tracked files other than data are changed ({shown}): commit or revert them first"
        )


def model_artifact(repo: Any) -> tuple[str, str]:
    """Name and path of the one artifact of type model dvc.yaml declares."""
    declared = {n: a for arts in repo.artifacts.read().values() for n, a in arts.items()}
    models = sorted(n for n, a in declared.items() if a.type == "model")
    if len(models) != 1:
        raise RetrainError(
            f"dvc.yaml declares {len(models)} artifacts of type model "
            f"({', '.join(models) or 'none'}): make retrain promotes exactly one"
        )
    return models[0], declared[models[0]].path


def read_settings(stage: str | None) -> tuple[Settings, str]:
    try:
        params = yaml.safe_load(PARAMS.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RetrainError(f"{PARAMS}: {one_line(exc)}") from None
    task = (params.get("prepare") or {}).get("task")
    try:
        return settings(params.get("retrain"), task, stage), task
    except GateError as exc:
        raise RetrainError(f"{PARAMS}: {exc}") from None


# -- GTO ---------------------------------------------------------------------------------------


def holder(root: Path, name: str, stage: str) -> Holder | None:
    """What GTO says holds ``name#stage``; None when nothing does."""
    import gto.api
    from gto.exceptions import ArtifactNotFound

    try:
        found = gto.api.find_versions_in_stage(str(root), name, stage)
    except ArtifactNotFound:
        return None
    if not found:
        return None
    current = found[0] if isinstance(found, list) else found
    return Holder(current.version, current.commit_hexsha)


def registered(root: Path, name: str) -> list[dict[str, Any]]:
    """GTO's registered, active versions of ``name`` (none when it has none)."""
    import gto.api
    from gto.exceptions import ArtifactNotFound

    try:
        shown = gto.api.show(str(root), name)
    except ArtifactNotFound:
        return []
    return [v for v in shown if v.get("registrations") and v.get("is_active")]


def latest_version(root: Path, name: str) -> str | None:
    import gto.api
    from gto.exceptions import ArtifactNotFound

    try:
        latest = gto.api.find_latest_version(str(root), name)
    except ArtifactNotFound:
        return None
    return latest.version if latest else None


def check_stage_allowed(root: Path, stage: str) -> None:
    import gto.api

    allowed = gto.api.get_stages(str(root), allowed=True)
    if allowed and stage not in allowed:
        raise RetrainError(f"GTO's config allows the stages {', '.join(allowed)}, not {stage!r}")


def tag_exists(root: Path, tag: str) -> bool:
    return git_ok(root, "rev-parse", "-q", "--verify", f"refs/tags/{tag}")


# -- DVC ---------------------------------------------------------------------------------------


def pinned_md5(root: Path, path: str, rev: str | None) -> str | None:
    """The md5 dvc.lock pins for ``path`` at ``rev`` (None: the work tree's dvc.lock)."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(root), rev=rev)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    finally:
        fs.close()  # its git packs and DVC index: not left to the garbage collector
    return info.get("md5") or (info.get("dvc_info") or {}).get("md5")


def metrics_at(root: Path, rev: str | None) -> dict[str, Any]:
    """The metrics dvc.yaml declares, at ``rev`` (None: the work tree)."""
    import dvc.api

    return flatten(dvc.api.metrics_show(repo=str(root), rev=rev))


def earlier_pins(root: Path, dvc_file: Path) -> set[str]:
    """The md5s earlier commits of ``dvc_file`` pinned."""
    pins = set()
    revs = git(root, "log", f"-n{HISTORY}", "--format=%H", "--", str(dvc_file)).split()
    for rev in revs[1:] if revs else []:
        text = git(root, "show", f"{rev}:{dvc_file.as_posix()}", check=False)
        try:
            pins.add(str(yaml.safe_load(text)["outs"][0]["md5"]))
        except (yaml.YAMLError, KeyError, IndexError, TypeError):
            continue
    return pins


def raw_files() -> tuple[Path, Path]:
    """The raw table prepare.data names, and the .dvc file that tracks it."""
    table = raw_data.raw_path(PARAMS)
    return table, table.with_name(table.name + ".dvc")


def refresh_raw(repo: Any, root: Path) -> str:
    """Bring the raw table prepare.data names up to date; say how."""
    from dvc.exceptions import DvcException

    table, dvc_file = raw_files()
    if not dvc_file.exists():
        raise RetrainError(
            f"{table} is not tracked by a .dvc file: make init DATA=... TARGET=... tracks it"
        )
    doc = yaml.safe_load(dvc_file.read_text()) or {}
    pinned = raw_data.pinned_md5(dvc_file)
    if doc.get("deps"):  # `dvc import` or `dvc import-url`: its source may have moved on
        source = doc["deps"][0].get("repo", {}).get("url") or doc["deps"][0].get("path")
        log.info("%s: dvc update from %s", table, source)
        try:
            repo.update(targets=[str(dvc_file)])
        except DvcException as exc:
            raise RetrainError(f"dvc update {dvc_file}: {one_line(exc)}") from None
        now = raw_data.pinned_md5(dvc_file)
        return "import unchanged" if now == pinned else f"import updated, md5 {pinned} → {now}"
    found = raw_data.md5_of(table)
    if found is None:
        return raw_data.ensure(table)
    if found == pinned:
        return f"unchanged (md5 {pinned})"
    if found in earlier_pins(root, dvc_file):
        log.info("%s: the work tree holds md5 %s, which an earlier commit pinned", table, found)
        try:
            repo.pull(targets=[str(dvc_file)], force=True)
        except DvcException as exc:
            raise RetrainError(
                f"{table} in the work tree is an older version (md5 {found}); the pinned md5 "
                f"{pinned} cannot be pulled: {one_line(exc)}"
            ) from None
        pulled = raw_data.md5_of(table)
        if pulled != pinned:
            raise RetrainError(f"dvc pull {dvc_file} left md5 {pulled}, not {pinned}")
        return f"replaced an older copy (md5 {found}) with the pinned md5 {pinned}"
    log.info("%s: a new version in the work tree (md5 %s, was %s): dvc add", table, found, pinned)
    try:
        repo.add(str(table))
    except DvcException as exc:
        raise RetrainError(f"dvc add {table}: {one_line(exc)}") from None
    return f"new version added, md5 {pinned} → {found}"


def reproduce(repo: Any) -> list[str]:
    from dvc.exceptions import DvcException

    log.info("dvc repro")
    try:
        ran = repo.reproduce()
    except DvcException as exc:
        cause = f" ({one_line(exc.__cause__)})" if exc.__cause__ else ""
        raise RetrainError(f"dvc repro failed: {one_line(exc)}{cause}") from None
    return [stage.addressing for stage in ran or []]


def push(repo: Any, pushed_md5s: dict[str, str | None]) -> str:
    """``dvc push`` to the default remote; what it pushed, or that there is none."""
    from dvc.exceptions import DvcException

    remote = repo.config["core"].get("remote")
    if not remote:
        return "no default DVC remote: nothing pushed (deploy hosts need one: dvc remote add -d)"
    url = repo.config["remote"].get(remote, {}).get("url", "?")
    log.info("dvc push to remote %r (%s)", remote, url)
    try:
        count = repo.push()
    except DvcException as exc:
        raise RetrainError(f"dvc push to {remote!r} ({url}): {one_line(exc)}") from None
    pins = ", ".join(f"{path} {md5}" for path, md5 in pushed_md5s.items() if md5)
    return f"pushed {count} new file(s) to remote {remote!r} ({url}); it holds {pins}"


# -- promotion ---------------------------------------------------------------------------------


def commit_message(
    name: str, version: str, stage: str, before: Holder | None, verdict: Verdict, raw: str
) -> str:
    was = f"was {before.version} at {before.commit[:12]}" if before else "first version"
    lines = [f"Retrain {name} {version} for {stage} ({was})", "", f"Raw data: {raw}", "Gate:"]
    lines += [f"  {c.describe()}" for c in verdict.comparisons]
    return "\n".join(lines) + "\n"


def commit(root: Path, paths: list[str], message: str) -> str:
    """Commit exactly ``paths`` (nothing else staged goes in); the new commit."""
    git(root, "add", "--", *paths)
    git(root, "commit", "-q", "-m", message, "--only", "--", *paths)
    return git(root, "rev-parse", "HEAD").strip()


def undo_commit(root: Path, made: str, parent: str) -> str:
    """Move the branch back from ``made`` to ``parent``, keeping the index and work tree."""
    moved = git_ok(root, "update-ref", "-m", "retrain: undo", "HEAD", parent, made)
    if moved:
        return f"the commit {made[:12]} was undone (HEAD back at {parent[:12]}, changes staged)"
    return f"the commit {made[:12]} stays on the branch, with no version registered"


def promote(
    root: Path,
    name: str,
    stage: str,
    version: str,
    paths: list[str],
    message: str,
) -> tuple[str, str]:
    """Commit ``paths`` (when any), register ``version`` there and assign ``stage`` to it; the
    commit and the version assigned (the one the commit held already, when it held one).

    A failure to register undoes the commit; a failure to assign leaves the registered version
    and says how to finish."""
    import gto.api

    parent = git(root, "rev-parse", "HEAD").strip()
    made = commit(root, paths, message) if paths else None
    target = made or parent
    if made:
        log.info("committed %s: %s", made[:12], ", ".join(paths))
    try:
        held = [v["version"] for v in registered(root, name) if v["commit_hexsha"] == target]
        if held:
            version = held[0]
            log.info("%s is registered already as %s@%s", target[:12], name, version)
        else:
            gto.api.register(
                str(root), name, target, version=version, message=f"{name} {version} (retrain)"
            )
            log.info("registered %s@%s at %s", name, version, target[:12])
    except Exception as exc:  # noqa: BLE001 - whatever broke, the commit must not stay untagged
        state = undo_commit(root, made, parent) if made else "nothing was committed"
        raise RetrainError(
            f"registering {name}@{version} failed: {one_line(exc)}; {state}; "
            f"{stage} stays where it was"
        ) from None
    try:
        gto.api.assign(
            str(root), name, stage, version=version, message=f"{name}#{stage}: {version}"
        )
    except Exception as exc:  # noqa: BLE001
        done = "committed and registered" if made else "registered"
        raise RetrainError(
            f"assigning {stage} to {name}@{version} ({done} at {target[:12]}) failed: "
            f"{one_line(exc)}; {stage} stays where it was; finish with: "
            f"gto assign {name} --version {version} --stage {stage}",
            FAILED if held else PARTIAL,
        ) from None
    return target, version


def retrain(root: Path, stage: str | None = None) -> int:
    """One retraining run in ``root`` (the current directory); the exit code."""
    from dvc.repo import Repo

    branch = check_repository(root)
    config, task = read_settings(stage)
    stage = config.stage
    with Repo(str(root)) as repo:
        name, model_path = model_artifact(repo)
        pipeline = pipeline_files(repo, root)
        check_clean(root, pipeline, out_dirs(repo, root))
        check_stage_allowed(root, stage)
        before = holder(root, name, stage)
        version = next_version(latest_version(root, name), config.bump)
        if tag_exists(root, f"{name}@{version}"):
            raise RetrainError(
                f"the next version's tag {name}@{version} exists already, and GTO counts no such "
                f"version (deregistered?): register one by hand (gto register {name} "
                "--version ...) or set retrain.bump higher"
            )
        log.info(
            "%s on %s: %s holds %s; the gate's thresholds (%s): %s",
            name,
            branch,
            stage,
            before.named(name) if before else "nothing yet",
            task,
            ", ".join(f"{t.metric} {t}" for t in config.thresholds),
        )
        raw = refresh_raw(repo, root)
        log.info("%s: %s", raw_data.raw_path(PARAMS), raw)
        ran = reproduce(repo)
        log.info("dvc repro: %s", f"ran {', '.join(ran)}" if ran else "everything up to date")

        new_md5 = pinned_md5(root, model_path, None)
        new_metrics = metrics_at(root, None)
        table, dvc_file = raw_files()
        ours = pipeline | {dvc_file.as_posix(), (table.parent / ".gitignore").as_posix()}
        pending = changed_paths(root, True, *sorted(ours))
        if before and new_md5 == pinned_md5(root, model_path, before.commit):
            left = f"; uncommitted: {', '.join(pending)}" if pending else ""
            log.info(
                "nothing to promote: %s md5 %s is the model %s holds, %s%s",
                model_path,
                new_md5,
                stage,
                before.named(name),
                left,
            )
            return OK
        old_metrics = metrics_at(root, before.commit) if before else None
        if before and not old_metrics:
            log.warning(
                "%s holds %s, whose commit has no metrics: nothing to compare with",
                stage,
                before.named(name),
            )
        try:
            verdict = judge(new_metrics, old_metrics, config.thresholds)
        except GateError as exc:
            raise RetrainError(str(exc)) from None
        for comparison in verdict.comparisons:
            log.info("  %s%s", comparison.describe(), "" if comparison.passed else "  REFUSED")
        if not verdict.passed:
            assert before is not None
            log.error(
                "gate refused: %s; %s stays at %s; dvc.lock and the metrics as reproduced stay "
                "uncommitted (dvc metrics diff %s)",
                verdict.reason(),
                stage,
                before.named(name),
                before.commit[:12],
            )
            return REFUSED
        log.info(
            "gate passed%s",
            f": nothing holds {stage} yet" if verdict.first else f" against {before.named(name)}",
        )
        log.info(push(repo, {model_path: new_md5}))
    message = commit_message(name, version, stage, before, verdict, raw)
    target, version = promote(root, name, stage, version, pending, message)
    log.info(
        "promoted: %s → %s@%s (%s)%s; publish with: git push --follow-tags",
        stage,
        name,
        version,
        target[:12],
        f", was {before.named(name)}" if before else "",
    )
    return OK


def main(argv: Iterable[str] | None = None) -> None:
    from dvc.exceptions import DvcException
    from gto.exceptions import GTOException

    parser = argparse.ArgumentParser(
        prog="python -m tools.retrain", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--stage", help="the GTO stage to beat and move (default: retrain.stage)")
    args = parser.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("dvc", "dvc_data", "dvc_objects", "gto", "scmrepo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code = retrain(Path("."), args.stage)
    except RetrainError as exc:
        log.error("retrain: %s", exc)
        code = exc.code
    except (raw_data.DataError, DvcException, GTOException, OSError) as exc:
        log.error("retrain: %s", one_line(exc))
        code = FAILED
    except KeyboardInterrupt:
        log.error("retrain: interrupted; nothing was committed unless a line above says so")
        code = 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        log.error(
            "retrain: unexpected %s: %s; nothing was committed unless a line above says so",
            type(exc).__name__,
            one_line(exc),
        )
        code = FAILED
    raise SystemExit(code)


if __name__ == "__main__":
    main()
