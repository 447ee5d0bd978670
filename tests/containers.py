"""Whether this machine can build and run OCI images (buildah, podman), and how to run them.

A test that needs them calls ``need_containers()``: it skips saying why, or, where the machine
is known to build images (LOCKSERVE_REQUIRE_OCI=1, set by .ci/run), fails.
"""

import os
import shutil

import pytest

REQUIRE_OCI = os.environ.get("LOCKSERVE_REQUIRE_OCI") == "1"
TOOLS = ("buildah", "podman", "skopeo", "mmdebstrap", "runc")
STORAGE = ["--storage-driver", "vfs"]
# podman as it works here: as root, no systemd, no daemon
PODMAN = ["podman", *STORAGE, "--cgroup-manager", "cgroupfs", "--runtime", "runc"]
RUN = ["run", "--rm", "--quiet", "--network", "host", "--ulimit", "nofile=1024:1024"]
RUN += ["--ulimit", "nproc=1024:1024"]


def container_problem() -> str | None:
    """Why images cannot be built and run here, or None."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (`make package-tools` installs them)"
    if os.geteuid() != 0:
        return "buildah and podman with vfs storage need root here (no user namespaces)"
    return None


def need_containers() -> None:
    problem = container_problem()
    if problem is not None:
        if REQUIRE_OCI:
            pytest.fail(f"LOCKSERVE_REQUIRE_OCI=1 but {problem}")
        pytest.skip(problem)
