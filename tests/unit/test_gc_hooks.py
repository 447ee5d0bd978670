"""Unit: the gunicorn master freezes what it loaded before workers are forked, at start and
after every reload (refused or not), and lets the replaced app go first; a worker raises its
young-generation threshold (api/gunicorn_conf.py)."""

import gc
import importlib
import sys
from types import ModuleType, SimpleNamespace

import pytest

from tests.unit.test_worker_signals import in_child, master_like


@pytest.fixture
def conf(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("LOCKSERVE_PIDFILE", str(tmp_path / "gunicorn.pid"))
    module = importlib.reload(importlib.import_module("api.gunicorn_conf"))
    yield module
    gc.unfreeze()


def test_the_master_freezes_what_it_loaded_when_ready(conf):
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    conf.when_ready(SimpleNamespace(app=SimpleNamespace(callable=object())))
    assert gc.get_freeze_count() > 0


@pytest.mark.parametrize("refused", [False, True])
def test_a_reload_unfreezes_builds_then_freezes_again(conf, monkeypatch, refused):
    seen = {}

    class App:
        state = SimpleNamespace()

    def build():
        seen["frozen while building"] = gc.get_freeze_count()
        if refused:
            raise RuntimeError("bad serving.yaml")
        return App()

    fake = ModuleType("api.main")
    fake.build = build
    monkeypatch.setitem(sys.modules, "api.main", fake)
    monkeypatch.setattr("api.reload.served", lambda app: {})
    conf.frozen()
    server = SimpleNamespace(app=SimpleNamespace(callable=object()))
    conf.on_reload(server)
    assert seen["frozen while building"] == 0  # the old app could be let go of
    assert gc.get_freeze_count() > 0
    assert isinstance(server.app.callable, App) is not refused


def test_a_worker_raises_its_young_generation_threshold(conf):
    def body() -> None:
        conf.post_fork(master_like(), object())
        assert gc.get_threshold()[0] == conf.GC_GEN0

    assert in_child(body) == ("exit", 0)
