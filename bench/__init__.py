"""Benchmarks: load tests against real servers, and the pipeline at scale; results in
bench/results/."""

import json
import logging
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
RESULTS = README.parent / "bench" / "results"


def fill_readme(name: str, text: str) -> bool:
    """Put ``text`` between the README's ``<!-- name:start -->`` and ``<!-- name:end -->``
    markers; False (nothing written) when the README has no such block."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    content = README.read_text()
    if start not in content or end not in content:
        return False
    head, rest = content.split(start, 1)
    README.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")
    return True


def publish(stem: str, block: str, result: dict[str, Any], text: str) -> None:
    """A run's figures as bench/results/<stem>.json, its text as <stem>.md, in the README's
    ``block`` and in the log."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(text + "\n")
    fill_readme(block, text)
    logging.getLogger("lockserve.bench").info("%s", text)
