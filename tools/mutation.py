"""Mutation testing (`make mutation`): mutmut over the modules pyproject.toml lists.

``[tool.mutmut] only_mutate`` in pyproject.toml is the one list of modules (paths or globs).
mutmut copies ``source_paths`` into mutants/, rewrites each listed module so that every mutant
can be switched on in turn, records which tests reach which function, and runs only those tests
against each mutant. ``python -m tools.mutation`` starts afresh, prints a table per module,
writes bench/results/mutation.md, and fails if a mutant no test caught is not judged in
tools/mutation_survivors.toml (equivalent or harmless, with the reason). ``--report`` prints the
last run's results again, ``--markdown`` rewrites the file; mutant names or globs
(``'api.errors.*'``) re-run just those, keeping the rest of the last run; ``--resume`` goes on
where an interrupted run stopped. ``mutmut show NAME`` shows one mutant's diff.

mutmut 3 takes a top-level directory called ``src`` for a layout folder: it strips ``src.`` from
module names, refuses trampoline hits from ``src.*`` and puts ``src/`` itself on ``sys.path``.
Here ``src`` is the pipeline's package (``from src import prepare``), so three small patches
below let mutmut name those modules as Python does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

JUDGED = Path(__file__).with_name("mutation_survivors.toml")
RESULTS = Path("bench/results/mutation.md")
TIMING = Path("mutants", "run-time.json")
CAUGHT = ("killed", "timeout")  # a mutant that makes the tests hang is caught too
COLUMNS = ("killed", "timeout", "survived", "no tests", "suspicious", "segfault", "not checked")


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _module_name(relative_source_path: Path, mutant_method_name: str) -> str:
    """``src/prepare.py`` + ``x_split__mutmut_1`` -> ``src.prepare.x_split__mutmut_1``."""
    module = ".".join(Path(relative_source_path).with_suffix("").parts)
    return f"{module}.{mutant_method_name}".replace(".__init__.", ".")


def _patch_mutmut() -> None:
    """Keep ``src.`` in module names, as Python (and so every trampoline) sees them."""
    import mutmut.__main__ as main
    import mutmut.mutation.file_mutation as file_mutation
    import mutmut.mutation.trampoline as trampoline
    import mutmut.stats as stats
    import mutmut.utils.format_utils as format_utils
    from mutmut.configuration import config
    from mutmut.state import state

    for module in (format_utils, main, file_mutation):
        module.get_mutant_name = _module_name

    original_hit = stats.record_trampoline_hit

    def record_trampoline_hit(name: str, caller: str | None = None) -> None:
        if not name.startswith("src."):
            return original_hit(name, caller)
        state()._stats.add(name)  # what the original does when max_stack_depth is -1
        if caller is not None and config().track_dependencies:
            state().function_dependencies[name].add(caller)

    if config().max_stack_depth != -1:
        raise SystemExit("tools.mutation: leave [tool.mutmut] max_stack_depth unset")
    stats.record_trampoline_hit = record_trampoline_hit
    trampoline.record_trampoline_hit = record_trampoline_hit

    def setup_source_paths() -> None:
        """mutants/ first on sys.path and the work tree off it; never mutants/src, whose
        modules would shadow top-level names such as ``tables``."""
        sys.path.insert(0, str(Path("mutants").absolute()))
        here = Path(".").resolve()
        sys.path[:] = [p for p in sys.path if Path(p).resolve() != here]

    main.setup_source_paths = setup_source_paths


def _mutants() -> dict[str, dict[str, str]]:
    """Per module file, each mutant's status in the last run (from mutants/*.meta)."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    found = {}
    for path in sorted(walk_mutatable_files()):
        data = SourceFileMutationData(path=path)
        data.load()
        found[str(path)] = {k: status_by_exit_code[c] for k, c in data.exit_code_by_key.items()}
    return found


def _judged() -> tuple[dict[str, str], dict[str, str]]:
    """(reason text by key, reason key by mutant name) from tools/mutation_survivors.toml."""
    doc = tomllib.loads(JUDGED.read_text(encoding="utf-8")) if JUDGED.exists() else {}
    return doc.get("reasons", {}), doc.get("mutants", {})


def _change(name: str, path: str) -> str:
    """The mutant's changed lines, as ``old`` → ``new``."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    lines = get_diff_for_mutant(name, path=path).splitlines()[2:]
    old = " ".join(x[1:].strip() for x in lines if x.startswith("-"))
    new = " ".join(x[1:].strip() for x in lines if x.startswith("+"))
    return f"`{old}` → `{new}`".replace("|", "\\|")


def report(elapsed_s: float | None = None, markdown: bool = False) -> int:
    """Print the last run's table and the mutants left alive; the number of those that
    tools/mutation_survivors.toml does not explain."""
    modules = _mutants()
    reasons, judged = _judged()
    rows = [(path, Counter(statuses.values())) for path, statuses in modules.items()]
    rows.append(("all", sum((counts for _, counts in rows), Counter())))
    shown = [c for c in COLUMNS if any(counts[c] for _, counts in rows)] or ["killed"]
    alive = [
        (path, name, status)
        for path, statuses in modules.items()
        for name, status in statuses.items()
        if status not in CAUGHT
    ]
    explained = [a for a in alive if a[1] in judged]
    total = rows[-1][1]
    count, caught = sum(total.values()), sum(total[c] for c in CAUGHT)
    if markdown:
        say("| module | mutants | " + " | ".join(shown) + " |")
        say("|---|---:|" + "---:|" * len(shown))
        for path, counts in rows:
            cells = " | ".join(str(counts[c]) for c in shown)
            say(f"| {path} | {sum(counts.values())} | {cells} |")
    else:
        width = max(len(path) for path, _ in rows)
        say(f"\n{'module':<{width}} {'mutants':>8}" + "".join(f"{c:>12}" for c in shown))
        for path, counts in rows:
            cells = "".join(f"{counts[c]:>12}" for c in shown)
            say(f"{path:<{width}} {sum(counts.values()):>8}{cells}")
    item = "- " if markdown else ""
    if count:
        meaningful = count - len(explained)
        say(f"\n{item}caught {caught} of {count} ({100 * caught / count:.1f}%)")
        say(
            f"{item}left alive and judged equivalent or harmless: {len(explained)}; caught of "
            f"the rest: {caught} of {meaningful} ({100 * caught / max(meaningful, 1):.1f}%)"
        )
    if elapsed_s is not None:
        say(f"{item}the last full run took {elapsed_s / 60:.1f} min")
    unexplained = [a for a in alive if a[1] not in judged]
    if markdown and alive:
        say("\n| mutant | change | status | why it may live |")
        say("|---|---|---|---|")
        for path, name, status in alive:
            why = reasons.get(judged.get(name, ""), "**not judged: kill it or say why**")
            say(f"| `{name}` | {_change(name, path)} | {status} | {why} |")
    elif unexplained:
        say(f"\nnot caught and not judged ({len(unexplained)}); `mutmut show NAME` shows one:")
        for _, name, status in unexplained:
            say(f"  {name}: {status}")
    return len(unexplained)


def _full_run_s() -> float | None:
    """How long the last full run took (a re-run of some mutants keeps it)."""
    return json.loads(TIMING.read_text())["seconds"] if TIMING.exists() else None


def write_markdown(elapsed_s: float | None) -> int:
    """bench/results/mutation.md from the last run; the number of unjudged survivors."""
    import contextlib
    import io
    from importlib.metadata import version

    body = io.StringIO()
    with contextlib.redirect_stdout(body):
        unexplained = report(elapsed_s, markdown=True)
    took = f", in {elapsed_s / 60:.0f} min on {os.cpu_count()} cores" if elapsed_s else ""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# Mutation testing\n\n"
        f"`make mutation`: mutmut {version('mutmut')} over the modules `[tool.mutmut] "
        "only_mutate` lists in pyproject.toml, each mutant against the unit and integration "
        f"tests that reach its function{took} ({time.strftime('%Y-%m-%d')}). A mutant left "
        "alive is either killed by a new test or judged in tools/mutation_survivors.toml: "
        "equivalent (no input tells it from the code) or harmless (what it changes no user "
        "sees).\n\n" + body.getvalue().lstrip("\n"),
        encoding="utf-8",
    )
    return unexplained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="print the last run's results")
    parser.add_argument(
        "--markdown", action="store_true", help=f"rewrite {RESULTS} from the last run"
    )
    parser.add_argument(
        "--resume", action="store_true", help="go on with the mutants the last run left unchecked"
    )
    parser.add_argument("mutants", nargs="*", help="re-run only these mutants (names or globs)")
    args = parser.parse_args()
    _patch_mutmut()
    ran = not (args.report or args.markdown)
    if ran:
        from mutmut.__main__ import _run

        if not (args.mutants or args.resume):  # a full run starts afresh
            shutil.rmtree("mutants", ignore_errors=True)
        # tests/conftest.py: the clean run builds the test artifacts, every mutant reuses them
        os.environ["LOCKSERVE_TEST_REUSE"] = str(Path("mutants", "reused").absolute())
        started = time.monotonic()
        _run(args.mutants, os.cpu_count())
        if not (args.mutants or args.resume):
            TIMING.write_text(json.dumps({"seconds": round(time.monotonic() - started, 1)}))
    full_run_s = _full_run_s()  # a re-run of some mutants keeps the last full run's time
    unexplained = report(full_run_s) if args.report else write_markdown(full_run_s)
    if ran:
        report(full_run_s)  # the table on screen as well
    if unexplained:
        raise SystemExit(
            f"tools.mutation: {unexplained} mutant(s) not caught and not judged: kill them with "
            "a test or say why in tools/mutation_survivors.toml"
        )


if __name__ == "__main__":
    main()
