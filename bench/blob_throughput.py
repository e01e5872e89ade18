"""Blob throughput: streaming a large value through the coordinator vs. raw loopback TCP.

In one run, on 127.0.0.1:

1. raw: one process sends SIZE bytes over a TCP socket to another, which discards them
   (the ceiling for any HTTP transfer on this machine);
2. upload: ``PUT /v1/blobs/{digest}`` of the same bytes to a real coordinator process
   (streamed in 1 MiB chunks; the coordinator hashes and writes them to disk);
3. download: ``GET /v1/blobs/{digest}`` by the node agent's own client, which hashes
   the bytes and writes them to a file, as it does for its blob cache;
4. raw copies into a file: as 1, but the receiver writes the bytes to a file, once
   fsynced (as a durable upload must) and once not (as a node's cache does); on a disk
   slower than loopback TCP, these and not 1 bound the transfers.

It reports MB/s and the ratios (targets: at least 0.5), and the coordinator's
peak PSS during the transfers, to show that a blob is never held whole in memory.

    python bench/blob_throughput.py [--size-mb 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from _proc import pss

CHUNK = 1 << 20


def chunks(size: int, block: bytes) -> Iterator[bytes]:
    """``size`` bytes as 1 MiB chunks repeating ``block``."""
    sent = 0
    while sent < size:
        n = min(CHUNK, size - sent)
        yield block[:n]
        sent += n


def raw_copy(size: int, block: bytes, target: Path | None = None, fsync: bool = False) -> float:
    """Seconds to push ``size`` bytes through a loopback TCP socket to another process,
    which discards them, or writes them to ``target`` (and with ``fsync`` makes them
    durable, as an upload to the coordinator must). These are the ceilings for ``PUT``
    (fsynced) and for a node's download into its cache (not) on this machine."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    sink = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os,socket,sys\n"
            f"s=socket.create_connection(('127.0.0.1',{port}))\n"
            f"f=open({str(target)!r},'wb') if {target is not None} else None\n"
            "b=bytearray(1<<20); v=memoryview(b); n=0\n"
            "while True:\n"
            "    k=s.recv_into(b)\n"
            "    if not k: break\n"
            "    if f: f.write(v[:k])\n"
            "    n+=k\n"
            "if f:\n"
            "    f.flush()\n"
            f"    if {fsync}: os.fsync(f.fileno())\n"
            "    f.close()\n"
            "print(n)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    conn, _ = srv.accept()
    t0 = time.perf_counter()
    for c in chunks(size, block):
        conn.sendall(c)
    conn.shutdown(socket.SHUT_WR)
    out, _ = sink.communicate(timeout=600)
    dt = time.perf_counter() - t0
    conn.close()
    srv.close()
    if target is not None:
        target.unlink(missing_ok=True)
    if int(out.strip()) != size:
        raise RuntimeError(f"raw copy lost bytes: {out.strip()} != {size}")
    return dt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=3, help="runs of each; medians reported")
    args = p.parse_args(argv)
    size = args.size_mb * 2**20

    import httpx

    from shoal._coord.server import read_tokens
    from shoal._node.client import CoordinatorClient

    block = os.urandom(CHUNK)
    h = hashlib.sha256()
    for c in chunks(size, block):
        h.update(c)
    digest = "sha256:" + h.hexdigest()

    with tempfile.TemporaryDirectory(prefix="shoal-blob-bench-") as tmp:
        state = Path(tmp)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        coord = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shoal._coord",
                "--state",
                str(state),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the coordinator did not start within 60 s")
                time.sleep(0.2)
            tokens = read_tokens(state)
            enrol = httpx.post(
                f"{base}/v1/nodes/enrol",
                json={
                    "join_token": tokens.join,
                    "node_id": "bench",
                    "datasets": [],
                    "gpu": False,
                    "images": None,
                },
                timeout=30,
            )
            enrol.raise_for_status()
            auth = {"Authorization": f"Bearer {enrol.json()['credential']}"}
            peak = 0
            sampling = True

            def sample() -> None:
                nonlocal peak
                while sampling:
                    peak = max(peak, pss(coord.pid))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            raw, raw_file, raw_disk, up, down = [], [], [], [], []
            node = CoordinatorClient(base, threading.Event())
            node.credential = enrol.json()["credential"]
            with httpx.Client(timeout=600, headers=auth) as client:
                for _ in range(args.repeat):
                    raw.append(raw_copy(size, block))
                    raw_file.append(raw_copy(size, block, state / "raw.bin"))
                    raw_disk.append(raw_copy(size, block, state / "raw.bin", fsync=True))
                    t0 = time.perf_counter()
                    r = client.put(f"{base}/v1/blobs/{digest}", content=chunks(size, block))
                    up.append(time.perf_counter() - t0)
                    r.raise_for_status()
                    # The node agent's own download: hashed and written to its cache.
                    t0 = time.perf_counter()
                    got = node.download(f"/v1/blobs/{digest}", state / "fetched.bin", digest)
                    down.append(time.perf_counter() - t0)
                    (state / "fetched.bin").unlink()
                    if got != size:
                        raise RuntimeError(f"download returned {got} bytes, not {size}")
            sampling = False
            sampler.join()
        finally:
            coord.terminate()
            try:
                coord.wait(timeout=15)
            except subprocess.TimeoutExpired:
                coord.kill()

    mb = size / 2**20

    def rate(times: list[float]) -> float:
        return mb / statistics.median(times)

    r_raw, r_file, r_disk = rate(raw), rate(raw_file), rate(raw_disk)
    r_up, r_down = rate(up), rate(down)
    print(
        f"blob of {mb:.0f} MiB, median of {args.repeat} runs, {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores"
    )
    print("| transfer | MB/s | ratio to raw TCP | ratio to its raw copy |")
    print("|---|---|---|---|")
    print(f"| raw loopback TCP (memory to memory) | {r_raw:.0f} | 1.00 | |")
    print(f"| raw copy into a file | {r_file:.0f} | {r_file / r_raw:.2f} | 1.00 |")
    print(f"| raw copy into a file, fsynced | {r_disk:.0f} | {r_disk / r_raw:.2f} | 1.00 |")
    print(
        f"| PUT /v1/blobs (upload, fsynced) | {r_up:.0f} | {r_up / r_raw:.2f} | "
        f"{r_up / r_disk:.2f} of the fsynced copy |"
    )
    print(
        f"| GET /v1/blobs (node download, hashed into a file) | {r_down:.0f} | "
        f"{r_down / r_raw:.2f} | {r_down / r_file:.2f} of the copy into a file |"
    )
    print(f"coordinator peak PSS during the transfers: {peak / 2**20:.0f} MiB (blob: {mb:.0f} MiB)")
    # Targets: each transfer at least half as fast as a raw socket copy that lands its
    # bytes where the transfer must (fsynced on the coordinator; in a node's cache file).
    return 0 if r_down >= 0.5 * r_file and r_up >= 0.5 * r_disk else 1


if __name__ == "__main__":
    sys.exit(main())
