"""The shape of the Open Inference Protocol's gRPC interface, as the kserve SDK ships it and as
lockserve's api/proto/open_inference_grpc.proto declares it, for a test to compare.

``python tests/clients/proto_fields.py PROTO`` (in .venv-clients) prints one JSON object with
two entries, ``kserve`` and ``lockserve``: package, every message's fields (name -> number,
type, label, message type) and the service's methods (name -> request, response).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2


def shape(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, Any]:
    (proto,) = [f for f in files if f.package == "inference"]
    messages: dict[str, Any] = {}

    def walk(message: descriptor_pb2.DescriptorProto, prefix: str) -> None:
        name = f"{prefix}{message.name}"
        if message.options.map_entry:
            return
        messages[name] = {
            f.name: [f.number, f.type, f.label, f.type_name.rsplit(".", 1)[-1]]
            for f in message.field
        }
        for nested in message.nested_type:
            walk(nested, f"{name}.")

    for message in proto.message_type:
        walk(message, "")
    services = {
        s.name: {m.name: [m.input_type, m.output_type] for m in s.method} for s in proto.service
    }
    return {"package": proto.package, "messages": messages, "services": services}


def kserve() -> dict[str, Any]:
    from kserve.protocol.grpc import grpc_predict_v2_pb2

    proto = descriptor_pb2.FileDescriptorProto()
    grpc_predict_v2_pb2.DESCRIPTOR.CopyToProto(proto)
    return shape([proto])


def lockserve(path: Path) -> dict[str, Any]:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        code = protoc.main(["protoc", f"-I{path.parent}", f"--descriptor_set_out={out}", path.name])
        assert code == 0, f"protoc failed on {path}"
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return shape(list(files))


if __name__ == "__main__":
    json.dump({"kserve": kserve(), "lockserve": lockserve(Path(sys.argv[1]))}, sys.stdout)
