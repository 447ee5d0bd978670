"""gRPC next to REST, measured in one run on one server: `python -m bench.protocols` (and
`make bench`, which runs it after the rest).

One default server (api.serve, the pinned model, ONNX) with gRPC beside HTTP. Every protocol is
driven by the same kind of load generator, so the ratio is the protocols' and not the tools':
an asyncio client in one process that keeps a fixed number of requests in flight (``c``) over
persistent connections (HTTP/1.1 keep-alive, one connection per slot; gRPC, slots spread over
several channels so that every worker gets connections), bounded in requests and in time.
Single-row requests at c=64 and 1000-row requests at c=4, for lockserve's /predict, the Open
Inference Protocol over REST (JSON tensors) and over gRPC (raw tensors), and MLflow's
/invocations. Results: bench/results/protocols.{json,md} and the README.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import psutil

from api.proto import open_inference_grpc_pb2 as pb
from api.proto import open_inference_grpc_pb2_grpc as pb_grpc
from bench import fill_readme
from tests.conftest import PENGUIN
from tests.servers import columns, free_port, http, infer_request, running

log = logging.getLogger("lockserve.bench")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SERVER = [sys.executable, "-m", "api.serve"]
Call = Callable[[], Awaitable[None]]


async def drive(
    make_call: Callable[[int], Awaitable[Call]], concurrency: int, requests: int, seconds: float
) -> dict[str, float]:
    """Keep ``concurrency`` requests in flight until ``requests`` are done or ``seconds`` pass."""
    latencies: list[float] = []
    failed = 0
    issued = 0
    deadline = time.perf_counter() + seconds

    async def slot(index: int) -> None:
        nonlocal issued, failed
        call = await make_call(index)
        while issued < requests and time.perf_counter() < deadline:
            issued += 1
            began = time.perf_counter()
            try:
                await call()
            except Exception:  # noqa: BLE001 - counted, the run goes on
                failed += 1
                continue
            latencies.append(time.perf_counter() - began)

    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    await asyncio.gather(*(slot(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    used = resource.getrusage(resource.RUSAGE_SELF)
    ordered = sorted(latencies)
    return {
        "requests": len(latencies) + failed,
        "concurrency": concurrency,
        "req_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 2),
        "p99_ms": round(1000 * ordered[int(len(ordered) * 0.99)], 2),
        "failed": failed,
        "client_cpu_s": round(used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime, 2),
        "seconds": round(elapsed, 2),
    }


def http_slot(
    port: int, path: str, body: bytes, content_type: str
) -> Callable[[int], Awaitable[Call]]:
    """One keep-alive HTTP/1.1 connection per slot; the whole answer is read every time."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()

    async def make(index: int) -> Call:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def call() -> None:
            writer.write(head + body)
            headers = await reader.readuntil(b"\r\n\r\n")
            status = headers[9:12]
            length = 0
            for line in headers.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if status != b"200":
                raise RuntimeError(status)

        return call

    return make


def grpc_slot(
    address: str, request: pb.ModelInferRequest, channels: int
) -> tuple[Callable[[int], Awaitable[Call]], list[grpc.aio.Channel]]:
    """Slots spread over ``channels`` gRPC channels (each its own connection)."""
    opened = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    stubs = [pb_grpc.GRPCInferenceServiceStub(c) for c in opened]

    async def make(index: int) -> Call:
        infer = stubs[index % len(stubs)].ModelInfer

        async def call() -> None:
            await infer(request)

        return call

    return make, opened


def oip_json(rows: list[dict]) -> bytes:
    inputs = []
    for name, values in columns(rows).items():
        datatype = "BYTES" if isinstance(values[0], str) else "FP64"
        inputs.append({"name": name, "datatype": datatype, "shape": [len(values)], "data": values})
    return json.dumps({"inputs": inputs}).encode()


def rows_for(n: int) -> list[dict]:
    return [PENGUIN] * n


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a server's master and workers so far."""
    master = psutil.Process(pid)
    total = 0.0
    for process in [master, *master.children(recursive=True)]:
        times = process.cpu_times()
        total += times.user + times.system
    return total


async def measure_all(
    pid: int, port: int, grpc_address: str, model: str, budget: dict
) -> list[dict]:
    results = []
    for rows, concurrency, requests, seconds in (
        (1, budget["c1"], budget["n1"], budget["s"]),
        (1000, budget["c1000"], budget["n1000"], budget["s"]),
    ):
        instances = rows_for(rows)
        cases = {
            "REST /predict (lockserve JSON)": http_slot(
                port, "/predict", json.dumps({"instances": instances}).encode(), "application/json"
            ),
            "OIP REST (JSON tensors)": http_slot(
                port, f"/v2/models/{model}/infer", oip_json(instances), "application/json"
            ),
            "MLflow /invocations (dataframe_split)": http_slot(
                port,
                "/invocations",
                json.dumps(
                    {
                        "dataframe_split": {
                            "columns": list(PENGUIN),
                            "data": [list(r.values()) for r in instances],
                        }
                    }
                ).encode(),
                "application/json",
            ),
        }
        make_grpc, opened = grpc_slot(grpc_address, infer_request(model, instances, raw=True), 8)
        cases["OIP gRPC (raw tensors)"] = make_grpc
        for name, make in cases.items():
            await drive(make, min(8, concurrency), 200, 5)  # warm-up
            server_cpu = cpu_seconds(pid)
            result = await drive(make, concurrency, requests, seconds)
            served = cpu_seconds(pid) - server_cpu
            result.update(
                protocol=name,
                rows=rows,
                rows_per_s=round(result["req_per_s"] * rows),
                server_cpu_us=round(1e6 * served / result["requests"], 1),
                client_cpu_us=round(1e6 * result["client_cpu_s"] / result["requests"], 1),
            )
            log.info("%s, %d row(s): %s", name, rows, result)
            results.append(result)
        for channel in opened:
            await channel.close()
    return results


def measure(budget: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        grpc_port = free_port()
        with running(
            SERVER, ROOT, Path(tmp) / "server.log", LOCKSERVE_GRPC_PORT=str(grpc_port)
        ) as server:
            model = http("GET", server.base + "/model")[1]["name"]
            address = f"127.0.0.1:{grpc_port}"
            results = asyncio.run(measure_all(server.proc.pid, server.port, address, model, budget))
    by = {(r["protocol"], r["rows"]): r for r in results}
    ratios = {
        rows: round(
            by[("OIP gRPC (raw tensors)", rows)]["req_per_s"]
            / by[("REST /predict (lockserve JSON)", rows)]["req_per_s"],
            2,
        )
        for rows in (1, 1000)
    }
    return {"results": results, "grpc_over_rest": ratios, "budget": budget}


def table(result: dict) -> str:
    lines = [
        "| protocol | rows/request | c | req/s | rows/s | p50 ms | p99 ms | failed | "
        "server CPU µs/request | client CPU µs/request |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        lines.append(
            f"| {r['protocol']} | {r['rows']} | {r['concurrency']} | {r['req_per_s']:.0f} | "
            f"{r['rows_per_s']:,} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['failed']} | "
            f"{r['server_cpu_us']:.0f} | {r['client_cpu_us']:.0f} |"
        )
    ratio = result["grpc_over_rest"]
    lines += [
        "",
        f"- gRPC / REST /predict: {ratio[1]}× req/s with one row a request, {ratio[1000]}× "
        f"with 1000 rows (MLServer's published anchor for an sklearn model: gRPC 2,259 vs REST "
        f"1,300 req/s = 1.74×).",
    ]
    return "\n".join(lines)


def write(result: dict) -> str:
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "workers": os.environ.get("WEB_CONCURRENCY", str(os.cpu_count())),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "protocols.json").write_text(json.dumps({"meta": meta, **result}, indent=2) + "\n")
    text = (
        f"{table(result)}\n\nOne asyncio load generator for every protocol (fixed concurrency, "
        f"persistent connections), at most {result['budget']['n1']:,} single-row and "
        f"{result['budget']['n1000']:,} 1000-row requests or {result['budget']['s']} s each; "
        f"{meta['cores']} cores shared by the server's {meta['workers']} workers and the "
        f"generator; {meta['date']}."
    )
    (RESULTS / "protocols.md").write_text(text + "\n")
    fill_readme("bench-protocols", text)
    return text


BUDGET = {"c1": 64, "n1": 20000, "c1000": 4, "n1000": 400, "s": 20.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=BUDGET["s"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("%s", write(measure({**BUDGET, "s": args.seconds})))


if __name__ == "__main__":
    main()
