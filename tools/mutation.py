"""Mutation testing (`make mutation`): mutmut over the modules pyproject.toml lists.

``[tool.mutmut] only_mutate`` in pyproject.toml is the one list of modules (glob patterns);
mutmut copies ``source_paths`` into mutants/, rewrites each listed module so every mutant can be
switched on in turn, records which tests reach which function, and runs only those tests
against each mutant. ``python -m tools.mutation`` runs it and prints a table per module and the
mutants that survived; ``python -m tools.mutation --report`` prints the last run's table again.
Arguments other than ``--report`` name mutants (globs such as ``api.errors.*``) to re-run.

mutmut 3 takes a top-level directory called ``src`` for a layout folder: it strips ``src.``
from module names, refuses trampoline hits from ``src.*`` and puts ``src/`` itself on
``sys.path``. Here ``src`` is the pipeline's package (``from src import prepare``), so three
small patches below let mutmut name those modules as Python does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

OK_STATUSES = ("killed", "timeout")  # a mutant that hangs the tests is caught too
COLUMNS = ("killed", "timeout", "survived", "no tests", "suspicious", "segfault", "not checked")


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
        state()._stats.add(name)  # what the original does with max_stack_depth -1
        if caller is not None and config().track_dependencies:
            state().function_dependencies[name].add(caller)

    if config().max_stack_depth != -1:
        raise SystemExit("tools.mutation: leave [tool.mutmut] max_stack_depth unset")
    stats.record_trampoline_hit = record_trampoline_hit
    trampoline.record_trampoline_hit = record_trampoline_hit

    def setup_source_paths() -> None:
        """mutants/ first on sys.path, the work tree off it (never mutants/src: its modules
        would shadow top-level names such as ``tables``)."""
        sys.path.insert(0, str(Path("mutants").absolute()))
        here = Path(".").resolve()
        sys.path[:] = [p for p in sys.path if Path(p).resolve() != here]

    main.setup_source_paths = setup_source_paths


def results() -> dict[str, Counter]:
    """Per module, how many of its mutants ended in each status (from mutants/*.meta)."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    table: dict[str, Counter] = {}
    for path in sorted(walk_mutatable_files()):
        data = SourceFileMutationData(path=path)
        data.load()
        table[str(path)] = Counter(status_by_exit_code[c] for c in data.exit_code_by_key.values())
    return table


def survivors() -> list[str]:
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    names = []
    for path in sorted(walk_mutatable_files()):
        data = SourceFileMutationData(path=path)
        data.load()
        names += [
            key
            for key, code in data.exit_code_by_key.items()
            if status_by_exit_code[code] not in OK_STATUSES
        ]
    return names


def report(elapsed_s: float | None = None) -> None:
    table = results()
    width = max(len(p) for p in table) if table else 10
    print(f"\n{'module':<{width}} {'mutants':>7} " + " ".join(f"{c:>11}" for c in COLUMNS))
    total: Counter = Counter()
    for path, counts in table.items():
        total.update(counts)
        row = " ".join(f"{counts.get(c, 0):>11}" for c in COLUMNS)
        print(f"{path:<{width}} {sum(counts.values()):>7} {row}")
    row = " ".join(f"{total.get(c, 0):>11}" for c in COLUMNS)
    print(f"{'all':<{width}} {sum(total.values()):>7} {row}")
    caught = sum(total.get(c, 0) for c in OK_STATUSES)
    if total:
        print(f"\ncaught {caught} of {sum(total.values())} ({100 * caught / sum(total.values()):.1f}%)")
    left = survivors()
    if left:
        print(f"\nnot caught ({len(left)}); `mutmut show NAME` in this directory shows one:")
        for name in left:
            print(f"  {name}")
    if elapsed_s is not None:
        print(f"\nmutation run took {elapsed_s / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="print the last run's results")
    parser.add_argument("mutants", nargs="*", help="only these mutants (globs), re-run")
    args = parser.parse_args()
    _patch_mutmut()
    if args.report:
        report()
        return
    from mutmut.__main__ import _run

    if not args.mutants:  # a full run starts afresh: new functions need new stats
        shutil.rmtree("mutants", ignore_errors=True)
    started = time.monotonic()
    _run(args.mutants, os.cpu_count())
    report(time.monotonic() - started)


if __name__ == "__main__":
    main()
