"""Benchmarks: load tests against real servers, and the pipeline at scale; results in
bench/results/."""

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


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
