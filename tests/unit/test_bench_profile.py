"""Unit: py-spy samples are put in the part of the request path their innermost known frame
belongs to, and waiting threads are left out (bench/profile.py)."""

import pytest

from bench.profile import PARTS, part_of, samples, shares

OUTER = "Runner.run (asyncio/runners.py:118);RequestContext.__call__ (api/middleware.py:152)"


@pytest.mark.parametrize(
    ("inner", "part"),
    [
        ("Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:406)", "runtime"),
        ("BaseModel.model_validate_json (pydantic/main.py:847)", "validation"),
        ("FeatureBuilder.rows (contract/features.py:60)", "features"),
        ("label_list (contract/labels.py:40)", "answer rule"),
        ("AccessLog.info (api/logs.py:108)", "access log"),
        ("RequestTally.add (api/metrics.py:70)", "metrics"),
        ("RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:524)", "server"),
        ("FastPredict.__call__ (api/fastpath.py:79)", "service plumbing"),
    ],
)
def test_a_sample_goes_to_its_innermost_known_frame(inner, part):
    assert part_of(f"{OUTER};{inner}".split(";")).startswith(part)


def test_the_outermost_frames_alone_are_the_server():
    assert part_of(["Runner.run (asyncio/runners.py:118)"]).startswith("server")
    assert part_of(["somewhere (elsewhere.py:1)"]) == "other"


def test_waiting_threads_are_left_out_and_shares_add_up():
    raw = "\n".join(
        [
            f"{OUTER};Session.run (onnxruntime/x.py:1) 3",
            f"{OUTER} 1",
            "Thread.run (threading.py:982);Condition.wait (threading.py:327) 50",
            "not a sample line",
        ]
    )
    assert [count for _, count in samples(raw)] == [3, 1]
    got = shares(raw)
    assert set(got) == {part for part, _ in PARTS}
    assert got["runtime (onnxruntime)"] == 0.75
    assert sum(got.values()) == pytest.approx(1.0)
