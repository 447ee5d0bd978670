"""Unit: the packaging targets' own logic (no builds): discovery, the unit file, the zip, the
Lambda size limit and the all-or-nothing publish."""

import json
import zipfile

import pytest

import package
from api.resolver import Resolved, md5_hex
from package import Built, Job, PackageError, lambda_zip, publish, systemd

DATA = b"model bytes"


def job(tmp_path, **options) -> Job:
    resolved = Resolved(
        "penguin-classifier", "models/model.zip", md5_hex(DATA), "v1", "c" * 40, "cache", DATA
    )
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "bundle").mkdir(exist_ok=True)
    (work / "bundle" / "model.zip").write_bytes(DATA)
    return Job(resolved, work / "bundle", work, True, options)


def test_every_target_is_found_by_its_module():
    assert list(package.targets()) == ["lambda", "oci", "systemd"]


def test_the_unit_names_the_pinned_model_and_the_install_path(tmp_path):
    texts = systemd.render(job(tmp_path, prefix="/srv/ls/", python="/usr/bin/python3.11"))
    unit = texts["lockserve.service"]
    assert f"Environment=LOCKSERVE_BUNDLE_MD5={md5_hex(DATA)}" in unit.splitlines()
    assert "Environment=LOCKSERVE_BUNDLE=/srv/ls/bundle" in unit.splitlines()
    assert (
        "ExecStart=/usr/bin/python3.11 -m gunicorn -c /srv/ls/api/gunicorn_conf.py api.main:app"
        in unit.splitlines()
    )
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit.splitlines()  # systemd's, not ours
    assert "EnvironmentFile=/etc/lockserve/lockserve.env" in unit.splitlines()
    assert "${" not in unit and "${" not in texts["lockserve.env"]


@pytest.mark.parametrize("bad", ["opt/lockserve", "/", "/opt/lock serve"])
def test_an_install_path_must_be_absolute(tmp_path, bad):
    with pytest.raises(PackageError, match="prefix must be an absolute path without spaces"):
        systemd.render(job(tmp_path, prefix=bad))


def test_the_lambda_zip_is_deterministic(tmp_path):
    tree = tmp_path / "tree"
    (tmp_path / "tree" / "pkg").mkdir(parents=True)
    (tree / "pkg" / "b.py").write_text("B = 2\n")
    (tree / "a.py").write_text("A = 1\n")
    (tree / "run").write_text("#!/bin/sh\n")
    (tree / "run").chmod(0o755)
    lambda_zip._zip(tree, tmp_path / "one.zip")
    (tree / "a.py").touch()  # a newer mtime changes nothing
    lambda_zip._zip(tree, tmp_path / "two.zip")
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "one.zip") as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == ["a.py", "pkg/b.py", "run"]
    assert [i.external_attr >> 16 for i in infos] == [0o644, 0o644, 0o755]


def test_a_lambda_package_over_the_limit_is_refused(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "dep").mkdir(parents=True)
    (site / "dep" / "__init__.py").write_bytes(b"#" * 5000)
    monkeypatch.setattr(lambda_zip.site, "site", lambda requirements: site)
    monkeypatch.setattr(lambda_zip, "LIMIT_BYTES", 4000)
    the_job = job(tmp_path)
    with pytest.raises(PackageError, match="unzipped, over Lambda's"):
        lambda_zip.build(the_job)
    assert not list(the_job.work.glob("*.zip"))


def test_publish_replaces_the_last_build_whole(tmp_path):
    out = tmp_path / "dist"
    (out / "lambda").mkdir(parents=True)
    (out / "lambda" / "old.zip").write_bytes(b"old")
    the_job = job(tmp_path)
    (the_job.work / "new.zip").write_bytes(b"new")
    final = publish("lambda", the_job, Built([the_job.work / "new.zip"], {"x": 1}), out, 1.25)
    assert sorted(p.name for p in final.iterdir()) == ["manifest.json", "new.zip"]
    facts = json.loads((final / "manifest.json").read_text())
    assert facts["md5"] == md5_hex(DATA) and facts["rev"] == "v1" and facts["x"] == 1
    assert facts["files"]["new.zip"]["bytes"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["lambda"]  # no staging left behind
