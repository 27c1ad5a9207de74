"""Measure, in the same run as a benchmark, the machine limits it is compared with.

Python-only so that `make bench` needs nothing installed by hand (../shared/peers/limits/ has
the fio/iperf3 versions; numbers agree within noise on these machines):
  * 4 KiB write + fdatasync each, one writer (IOPS): bounds a durable small PUT per replica
  * sequential write of N MiB with one fsync at the end (MB/s): bounds large durable PUTs
  * loopback TCP, one stream (MB/s): bounds what one connection can move
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time

__all__ = ["fsync_write_iops", "loopback_tcp_mbps", "measure_all", "seq_write_fsync_mbps"]


def fsync_write_iops(directory: str, seconds: float = 2.0) -> float:
    path = os.path.join(directory, "limits-fsync.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    buf = os.urandom(4096)
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            os.write(fd, buf)
            os.fdatasync(fd)
            n += 1
    finally:
        os.close(fd)
        os.remove(path)
    return n / (time.perf_counter() - t0)


def seq_write_fsync_mbps(directory: str, mib: int = 512) -> float:
    path = os.path.join(directory, "limits-seq.bin")
    buf = os.urandom(1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t0 = time.perf_counter()
    try:
        for _ in range(mib):
            os.write(fd, buf)
        os.fsync(fd)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    os.remove(path)
    return mib * (1 << 20) / dt / 1e6


def loopback_tcp_mbps(seconds: float = 2.0) -> float:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = [0]

    def sink() -> None:
        conn, _ = srv.accept()
        buf = bytearray(1 << 20)
        while True:
            n = conn.recv_into(buf)
            if not n:
                break
            got[0] += n
        conn.close()

    th = threading.Thread(target=sink)
    th.start()
    c = socket.create_connection(("127.0.0.1", port))
    data = os.urandom(1 << 20)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        c.sendall(data)
    c.close()
    th.join()
    dt = time.perf_counter() - t0
    srv.close()
    return got[0] / dt / 1e6


#: A JSON file the limits are kept in and read back from: ``run_all.py --smoke`` sets it so
#: that its benchmarks measure the limits once, not once each.
CACHE_ENV = "AMBRY_BENCH_LIMITS_CACHE"


def measure_all(directory: str | None = None, quick: bool = False) -> dict[str, float]:
    cache = os.environ.get(CACHE_ENV)
    if cache and os.path.exists(cache):
        with open(cache, encoding="utf-8") as f:
            cached: dict[str, float] = json.load(f)
        return cached
    d = directory or tempfile.gettempdir()
    out = {
        "fsync_4k_iops": fsync_write_iops(d, 0.5 if quick else 2.0),
        "seq_write_fsync_mbps": seq_write_fsync_mbps(d, 64 if quick else 512),
        "loopback_tcp_mbps": loopback_tcp_mbps(0.5 if quick else 2.0),
    }
    if cache:
        with open(cache + ".tmp", "w", encoding="utf-8") as f:
            json.dump(out, f)
        os.replace(cache + ".tmp", cache)
    return out


if __name__ == "__main__":
    for k, v in measure_all().items():
        print(f"{k}: {v:,.0f}")
