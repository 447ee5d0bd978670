"""A model bundle: the verified bytes of one pinned model, as a packaged artifact carries them.

A bundle is a folder with the model file and ``bundle.json`` (what dvc.lock pinned: artifact
name, path, md5, rev, commit, and the metrics at that rev). ``python -m package`` writes it from
bytes the resolver verified; an OCI image, a Lambda zip or a systemd install serves it with
``LOCKSERVE_BUNDLE`` set, with no repository and no DVC. Reading it checks the md5 twice: the
file against the manifest, and the manifest against ``LOCKSERVE_BUNDLE_MD5`` (the md5 the image
was labelled with), so a model changed after packaging never answers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from api.resolver import ResolutionError, Resolved, md5_hex

MANIFEST = "bundle.json"
FORMAT = 1
SOURCE = "bundle"


def write(directory: Path, resolved: Resolved) -> Path:
    """Write ``resolved`` (already verified) into ``directory`` as a bundle; return its manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    filename = Path(resolved.path).name
    (directory / filename).write_bytes(resolved.data)
    manifest = {
        "format": FORMAT,
        "name": resolved.name,
        "path": resolved.path,
        "file": filename,
        "md5": resolved.md5,
        "size": len(resolved.data),
        "rev": resolved.rev,
        "commit": resolved.commit,
        "metrics": resolved.metrics,
    }
    target = directory / MANIFEST
    target.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return target


def manifest(directory: Path) -> dict[str, Any]:
    """The bundle's ``bundle.json``, or ResolutionError saying why it cannot be read."""
    where = directory / MANIFEST
    try:
        data = json.loads(where.read_text())
    except FileNotFoundError:
        raise ResolutionError(f"{where}: no such file (LOCKSERVE_BUNDLE is not a bundle)") from None
    except (OSError, ValueError) as exc:
        raise ResolutionError(f"{where}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise ResolutionError(f"{where}: not a bundle of format {FORMAT}")
    missing = [key for key in ("name", "path", "file", "md5", "rev", "commit") if key not in data]
    if data.get("format") != FORMAT or missing:
        raise ResolutionError(
            f"{where}: not a bundle of format {FORMAT}"
            + (f" (missing {', '.join(missing)})" if missing else "")
        )
    return data


def read(directory: Path, expect_md5: str | None = None) -> Resolved:
    """The bundle's model as verified bytes: refused (ResolutionError, one line) when the file's
    md5 is not the manifest's, or the manifest's is not ``expect_md5``."""
    started = time.perf_counter()
    info = manifest(directory)
    if expect_md5 is not None and info["md5"] != expect_md5:
        raise ResolutionError(
            f"{directory / MANIFEST} names md5 {info['md5']}, this artifact was built for "
            f"{expect_md5} (LOCKSERVE_BUNDLE_MD5): not served"
        )
    model = directory / Path(info["file"]).name
    try:
        data = model.read_bytes()
    except OSError as exc:
        raise ResolutionError(f"{model}: cannot be read ({exc.strerror})") from None
    verify_started = time.perf_counter()
    got = md5_hex(data)
    verify_ms = (time.perf_counter() - verify_started) * 1000
    if got != info["md5"]:
        raise ResolutionError(
            f"{model} has md5 {got}, dvc.lock at {info['rev']} ({info['commit'][:12]}) pinned "
            f"{info['md5']}: the bundled model was changed; not served"
        )
    timings = {"verify_ms": verify_ms, "resolve_ms": (time.perf_counter() - started) * 1000}
    return Resolved(
        info["name"],
        info["path"],
        info["md5"],
        info["rev"],
        info["commit"],
        SOURCE,
        data,
        info.get("metrics") or {},
        timings,
    )
