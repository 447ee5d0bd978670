"""Unit: the packaging targets' own logic (no builds): discovery, the unit file, the zip, the
Lambda size limit and the all-or-nothing publish."""

import dataclasses
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


def test_the_sklearn_dependencies_only_for_an_artifact_without_a_graph(tmp_path):
    onnx = job(tmp_path)
    assert onnx.requirements.name == "runtime.lock"
    assert "scikit-learn==" not in onnx.requirements.read_text()
    no_graph = Job(onnx.resolved, onnx.bundle, onnx.work, False)
    assert no_graph.requirements.name == "runtime-sklearn.lock"
    assert "scikit-learn==" in no_graph.requirements.read_text()


def test_every_target_is_found_by_its_module():
    assert list(package.targets()) == ["lambda", "mlflow", "oci", "systemd"]


def test_all_is_the_deployable_artifacts_and_the_mlflow_export_only_when_named():
    from package.__main__ import selected

    known = package.targets()
    assert selected(known, "all") == ["lambda", "oci", "systemd"]
    assert selected(known, "mlflow") == ["mlflow"]


def test_the_unit_names_the_pinned_model_and_the_install_path(tmp_path):
    texts = systemd.render(job(tmp_path, prefix="/srv/ls/", python="/usr/bin/python3.11"))
    unit = texts["lockserve.service"]
    assert f"Environment=LOCKSERVE_BUNDLE_MD5={md5_hex(DATA)}" in unit.splitlines()
    assert "Environment=LOCKSERVE_BUNDLE=/srv/ls/bundle" in unit.splitlines()
    assert "ExecStart=/usr/bin/python3.11 -S -m api.serve" in unit.splitlines()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit.splitlines()  # systemd's, not ours
    assert "EnvironmentFile=/etc/lockserve/lockserve.env" in unit.splitlines()
    assert "Type=notify" in unit.splitlines()  # ready only once the model is verified
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
    assert [i.external_attr >> 16 for i in infos] == [0o100644, 0o100644, 0o100755]  # files


def fake_site(tmp_path, size: int):
    site = tmp_path / "site"
    (site / "dep").mkdir(parents=True)
    (site / "dep" / "__init__.py").write_bytes(b"#" * size)
    (site / "awslambdaric").mkdir()  # Lambda's runtime brings its own: not in the zip
    (site / "awslambdaric" / "__init__.py").write_bytes(b"#" * size)
    return site


def test_a_lambda_package_over_the_limit_is_refused(tmp_path, monkeypatch):
    """The limit counts everything unzipped: the app and bundle alone fit, the site tips it."""
    site = fake_site(tmp_path, 5000)
    monkeypatch.setattr(lambda_zip.deps, "installed", lambda requirements: site)
    app_and_bundle = sum(
        package.tree_bytes(package.ROOT / name) for name in package.APP_PACKAGES
    ) + len(DATA)
    monkeypatch.setattr(lambda_zip, "LIMIT_BYTES", app_and_bundle + 4000)  # pycs come on top
    the_job = job(tmp_path)
    with pytest.raises(PackageError, match="unzipped, over Lambda's"):
        lambda_zip.build(the_job)
    assert not list(the_job.work.glob("*.zip"))


def test_the_lambda_zip_leaves_the_runtime_client_to_lambda(tmp_path, monkeypatch):
    site = fake_site(tmp_path, 10)
    monkeypatch.setattr(lambda_zip.deps, "installed", lambda requirements: site)
    built = lambda_zip.build(job(tmp_path))
    with zipfile.ZipFile(built.files[0]) as archive:
        names = archive.namelist()
    assert "dep/__init__.py" in names and "bundle/model.zip" in names
    assert "api/lambda_handler.py" in names
    assert not [n for n in names if n.startswith("awslambdaric")]
    assert built.facts["handler"] == "api.lambda_handler.handler"


def run_main(tmp_path, monkeypatch, *args, build=None):
    """python -m package's main with the resolver and the targets replaced by fakes."""
    from package import __main__ as cli

    resolved = job(tmp_path).resolved
    monkeypatch.setattr(
        cli, "resolve", lambda repo, rev, *a, **k: dataclasses.replace(resolved, rev=rev)
    )
    monkeypatch.setattr(cli.artifact, "load", lambda data, md5: type("A", (), {"onnx": b"g"}))

    class Target:
        TARGET = "fake"
        OPTIONS = ("prefix",)

        @staticmethod
        def build(the_job):
            return build(the_job)

    monkeypatch.setattr(cli, "targets", lambda: {"fake": Target})
    return cli.main(["--out", str(tmp_path / "dist"), "--target", "fake", *args])


def test_a_target_that_fails_leaves_its_last_build_as_it_was(tmp_path, monkeypatch, caplog):
    out = tmp_path / "dist"
    (out / "fake").mkdir(parents=True)
    (out / "fake" / "last.zip").write_bytes(b"last")

    def half_then_fail(the_job):
        (the_job.work / "half.zip").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    assert run_main(tmp_path, monkeypatch, build=half_then_fail) == 1
    assert "package fake: [Errno 28] No space left on device" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["fake"]  # no scratch folder left
    assert [p.name for p in (out / "fake").iterdir()] == ["last.zip"]


def test_the_cli_refuses_unknown_options_and_the_work_tree(tmp_path, monkeypatch, caplog):
    def never(the_job):
        raise AssertionError("built")

    assert run_main(tmp_path, monkeypatch, "--set", "prefx=/x", build=never) == 1
    assert "--set prefx: no chosen target takes it (they take: prefix)" in caplog.text
    assert run_main(tmp_path, monkeypatch, "--rev", "workspace", build=never) == 1
    assert "rev 'workspace' names no commit" in caplog.text
    assert not (tmp_path / "dist").exists()


def test_an_option_of_a_target_not_chosen_is_refused():
    from package.__main__ import _options

    with pytest.raises(PackageError, match="--set prefix: no chosen target takes it"):
        _options(["prefix=/srv/x"], [lambda_zip])
    assert _options(["prefix=/srv/x"], [lambda_zip, systemd]) == {"prefix": "/srv/x"}


@pytest.mark.parametrize(("rev", "recorded"), [("HEAD~1", "c" * 40), ("v1", "v1")])
def test_a_relative_rev_is_recorded_as_its_commit(tmp_path, monkeypatch, rev, recorded):
    def built(the_job):
        (the_job.work / "a.zip").write_bytes(b"a")
        return Built([the_job.work / "a.zip"])

    assert run_main(tmp_path, monkeypatch, "--rev", rev, build=built) == 0
    facts = json.loads((tmp_path / "dist" / "fake" / "manifest.json").read_text())
    assert facts["rev"] == recorded and facts["commit"] == "c" * 40


def test_compiled_files_do_not_depend_on_where_they_were_built(tmp_path):
    from package.deps import compile_tree

    for where in ("one", "two/deeper"):
        (tmp_path / where / "pkg").mkdir(parents=True)
        (tmp_path / where / "pkg" / "mod.py").write_text("def f():\n    return 1\n")
        compile_tree(tmp_path / where / "pkg", "pkg")
    one, two = (
        next((tmp_path / where / "pkg" / "__pycache__").iterdir()).read_bytes()
        for where in ("one", "two/deeper")
    )
    assert one == two and str(tmp_path).encode() not in one


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


def test_publish_lists_each_file_of_a_folder(tmp_path):
    out = tmp_path / "dist"
    out.mkdir()
    the_job = job(tmp_path)
    (the_job.work / "model" / "code").mkdir(parents=True)
    (the_job.work / "model" / "MLmodel").write_text("flavors: {}\n")
    (the_job.work / "model" / "code" / "a.py").write_text("A = 1\n")
    final = publish("mlflow", the_job, Built([the_job.work / "model"]), out, 1.0)
    files = json.loads((final / "manifest.json").read_text())["files"]
    assert sorted(files) == ["model/MLmodel", "model/code/a.py"]
    assert files["model/code/a.py"]["bytes"] == 6
    assert (final / "model" / "code" / "a.py").read_text() == "A = 1\n"
