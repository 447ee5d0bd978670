"""Unit: the committed gRPC stubs are what grpcio-tools generates from the committed proto
(`make proto`), so neither can change without the other."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PROTO = "api/proto/open_inference_grpc.proto"
STUBS = [
    "open_inference_grpc_pb2.py",
    "open_inference_grpc_pb2.pyi",
    "open_inference_grpc_pb2_grpc.py",
]


def test_committed_stubs_match_the_proto(tmp_path: Path):
    (tmp_path / "api" / "proto").mkdir(parents=True)
    (tmp_path / PROTO).write_bytes((ROOT / PROTO).read_bytes())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            PROTO,
        ],
        cwd=tmp_path,
        check=True,
    )
    for name in STUBS:
        generated = (tmp_path / "api" / "proto" / name).read_text()
        assert (ROOT / "api" / "proto" / name).read_text() == generated, f"{name}: run make proto"


def test_the_service_and_its_six_calls_are_the_protocols():
    from api.proto import open_inference_grpc_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert [m.name for m in service.methods] == [
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    ]
