"""One command for the whole benchmark: ``python bench/run.py`` (or ``make bench``).

Measures, on this machine and in one run:

* the libvips limit: a Python loop, shrink-on-load + lanczos3, 4 threads (``bench/limit.py``),
  and the same loop with ``thumbnail_buffer``;
* originshield cold: render cache off, every request a distinct render (a unique ``v=``), WebP q75
  and progressive JPEG q80 at 400 px wide, at concurrency 8 and 32, with wrk;
* originshield hot: signed URLs already in the render cache, access log off;
* a bare aiohttp app returning a 21 kB body, the reference for the hot path;
* the stampede: 100 concurrent requests for one cold render against one request alone;
* peak RSS and CPU milliseconds per request of the server process.

It prints a Markdown table with the ratios the targets are stated in, and stops every process it
started. ``--smoke`` runs each step for a second, for CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_IMAGES = ROOT.parent / "shared" / "testdata" / "bench"
KEY = "benchmark-signing-key-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    name: str
    rps: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_ms: float | None = None
    rss_mb: float | None = None
    note: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def generate_images(folder: Path) -> None:
    """Photo-like JPEGs of 1.3-4.9 MP, for machines without the shared bench set."""
    import pyvips

    for i, (w, h) in enumerate([(2560, 1440), (1920, 1080), (2448, 1999), (1024, 1280),
                                (1600, 1200)]):  # fmt: skip
        xy = pyvips.Image.xyz(w, h)
        r = (xy[0] * (255 / w)).cast("uchar")
        g = (xy[1] * (255 / h)).cast("uchar")
        noise = pyvips.Image.gaussnoise(w, h, sigma=30, mean=128).gaussblur(1.2).cast("uchar")
        img = r.bandjoin([g, noise]).copy(interpretation="srgb")
        img.jpegsave(str(folder / f"generated_{i}.jpg"), Q=90)


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds used, peak RSS in MB) of a process and its children."""
    cpu = 0.0
    peak = 0.0
    pids = [pid, *children(pid)]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / CLK_TCK
            status = Path(f"/proc/{p}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]) / 1024)
        except (OSError, IndexError):
            continue
    return cpu, peak


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    out = [int(c) for c in text.split()]
    for c in list(out):
        out.extend(children(c))
    return out


def wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wrk(url: str, paths: list[str], *, seconds: float, connections: int, cold: bool,
        tmp: Path) -> tuple[float, float, float, int]:  # fmt: skip
    """(req/s, p50 ms, p99 ms, requests) from wrk rotating over ``paths``."""
    listing = tmp / f"paths-{time.monotonic_ns()}.txt"
    listing.write_text("\n".join(paths) + "\n")
    cmd = [
        "wrk", "-t", "2", "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
        "--latency", "-s", str(HERE / "rotate.lua"), url, "--", str(listing),
    ]  # fmt: skip
    if cold:
        cmd.append("cold")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]

    def pct(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if m is None:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return rps, pct("50"), pct("99"), total


def measure(name: str, pid: int, base: str, paths: list[str], seconds: float, conns: int,
            cold: bool, tmp: Path) -> Row:  # fmt: skip
    cpu0, _ = proc_stats(pid)
    rps, p50, p99, total = wrk(base, paths, seconds=seconds, connections=conns, cold=cold, tmp=tmp)
    cpu1, rss = proc_stats(pid)
    return Row(name, rps, p50, p99, (cpu1 - cpu0) * 1000 / max(1, total), rss)


def best(repeat: int, run_once: Callable[[], Row]) -> Row:
    """Best of ``repeat`` runs: on a shared machine the noise only ever slows a run down."""
    return max((run_once() for _ in range(repeat)), key=lambda r: r.rps)


def limit(images: Path, fmt: str, q: int, seconds: float, thumbnail: bool) -> dict[str, object]:
    cmd = [sys.executable, str(HERE / "limit.py"), "--images", str(images), "--format", fmt,
           "--quality", str(q), "--seconds", str(seconds)]  # fmt: skip
    if thumbnail:
        cmd.append("--thumbnail")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result: dict[str, object] = json.loads(out)
    return result


def server_env(images: Path, *, cache: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORIGINSHIELD_")}
    env.update({
        "PYTHONPATH": str(ROOT),
        "ORIGINSHIELD_ORIGIN__ROOT": str(images),
        "ORIGINSHIELD_SIGNING__KEYS": KEY,
        "ORIGINSHIELD_SIGNING__REQUIRED": "false",
        "ORIGINSHIELD_LOG__ACCESS": "false",
        "ORIGINSHIELD_LOG__LEVEL": "warning",
        "ORIGINSHIELD_TRANSFORM__QUEUE": "1000",
        # Same encoder settings as the loop, so output sizes compare at equal quality.
        "ORIGINSHIELD_TRANSFORM__EFFORT_WEBP": "4",
        "ORIGINSHIELD_CACHE__RENDERS_BYTES": "268435456" if cache else "0",
    })  # fmt: skip
    env.update(extra or {})
    return env


@contextmanager
def originshield(images: Path, *, cache: bool, workers: int = 1,
                 extra: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:  # fmt: skip
    port = free_port()
    cmd = [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--workers", str(workers)]
    with process(cmd, server_env(images, cache=cache, extra=extra)) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz")
        time.sleep(0.5 * workers)
        yield base, proc.pid


async def _stampede(base: str, path: str, n: int) -> float:
    """Seconds until n concurrent GETs of ``path`` have all been answered in full.

    A minimal HTTP/1.1 client on connections opened beforehand, so the figure measures the
    server (one render, n responses), not a client library or TCP handshakes.
    """
    host, port = urlsplit(base).hostname, urlsplit(base).port
    conns = [await asyncio.open_connection(host, port) for _ in range(n)]
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:40]
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)

    started = time.perf_counter()
    await asyncio.gather(*(one(r, w) for r, w in conns))
    elapsed = time.perf_counter() - started
    for _, writer in conns:
        writer.close()
    return elapsed


def stampede(base: str, names: list[str]) -> tuple[float, float]:
    """(seconds for one cold render, seconds for 100 concurrent identical cold requests),
    each the best of three and summed over every image, so one image does not decide."""
    single = crowd = 0.0
    for name in names:
        path = f"/{name}?w=400&f=webp&q=75"
        single += min(asyncio.run(_stampede(base, f"{path}&v=single{i}", 1)) for i in range(3))
        crowd += min(asyncio.run(_stampede(base, f"{path}&v=crowd{i}", 100)) for i in range(3))
    return single, crowd


def signed_paths(names: list[str]) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from proxy.signing import Signer

    signer = Signer([KEY])
    return [signer.url(n, w=400, f="webp", q=75) for n in names]


def run(args: argparse.Namespace) -> str:
    seconds = 1.0 if args.smoke else args.seconds
    if args.smoke:
        args.repeat = 1
    tmp = Path(tempfile.mkdtemp(prefix="originshield-bench-"))
    try:
        images = tmp / "images"
        images.mkdir()
        source = Path(args.images) if args.images else DEFAULT_IMAGES
        if source.is_dir() and list(source.glob("*.jpg")):
            for p in source.glob("*.jpg"):
                shutil.copy(p, images / p.name)
        else:
            generate_images(images)
        names = sorted(p.name for p in images.glob("*.jpg"))
        rows: list[Row] = []
        sizes: dict[str, float] = {}
        for fmt, q in (("webp", 75), ("jpeg", 80)):
            with originshield(images, cache=False) as (base, pid):
                paths = [f"/{n}?w=400&f={fmt}&q={q}" for n in names]
                # The loops and the server take turns, round after round, so that a machine
                # drifting faster or slower affects both sides of each ratio alike.
                loops: dict[bool, list[dict[str, object]]] = {False: [], True: []}
                served: dict[int, list[Row]] = {c: [] for c in args.concurrency}
                for _ in range(args.repeat):
                    for thumbnail in (False, True):
                        loops[thumbnail].append(limit(images, fmt, q, seconds, thumbnail))
                    for conns in args.concurrency:
                        name = f"originshield cold, {fmt}, c={conns}"
                        served[conns].append(
                            measure(name, pid, base, paths, seconds, conns, True, tmp)
                        )
                for thumbnail in (False, True):
                    res = max(loops[thumbnail], key=lambda r: float(r["rps"]))  # type: ignore[arg-type]
                    kind = "thumbnail" if thumbnail else "limit"
                    if not thumbnail:
                        sizes[f"limit-{fmt}"] = float(res["mean_bytes"])  # type: ignore[arg-type]
                    rows.append(Row(f"libvips {kind} loop, {fmt}", float(res["rps"])))  # type: ignore[arg-type]
                for conns in args.concurrency:
                    rows.append(max(served[conns], key=lambda r: r.rps))
                sizes[f"originshield-{fmt}"] = asyncio.run(_mean_size(base, paths))
        for workers in (1, 2):
            with originshield(images, cache=True, workers=workers) as (base, pid):
                paths = signed_paths(names)
                asyncio.run(_warm(base, paths, workers))
                name = f"originshield hot, {workers} process(es)"
                once = partial(measure, name, pid, base, paths, seconds, 64, False, tmp)
                rows.append(best(args.repeat, once))
            body = tmp / "body.webp"
            body.write_bytes(b"\x00" * 21064)
            port = free_port()
            cmd = [sys.executable, str(HERE / "bare.py"), "--port", str(port), "--body", str(body)]
            with _many(cmd, workers):
                bare = f"http://127.0.0.1:{port}"
                wait_http(bare + "/x")
                runs = [
                    wrk(bare, ["/a.webp"], seconds=seconds, connections=64, cold=False, tmp=tmp)
                    for _ in range(args.repeat)
                ]
                rps, p50, p99, _ = max(runs)
                rows.append(Row(f"bare aiohttp, {workers} process(es)", rps, p50, p99))
        with originshield(images, cache=True) as (base, _):
            single, crowd = stampede(base, names)
        return report(rows, sizes, single, crowd, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _many(cmd: list[str], n: int) -> Iterator[list[int]]:
    with process(cmd) as first:
        if n == 1:
            yield [first.pid]
            return
        with process(cmd) as second:
            yield [first.pid, second.pid]


async def _warm(base: str, paths: list[str], workers: int) -> None:
    # Fresh connections land on every process, so each one caches every URL.
    for _ in range(4 * workers):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            for p in paths:
                async with s.get(base + p) as r:
                    await r.read()
                    assert r.status == 200, (p, r.status)


async def _mean_size(base: str, paths: list[str]) -> float:
    total = 0
    async with aiohttp.ClientSession() as s:
        for i, p in enumerate(paths):
            async with s.get(f"{base}{p}&v=size{i}") as r:
                total += len(await r.read())
    return total / len(paths)


def report(rows: list[Row], sizes: dict[str, float], single: float, crowd: float,
           args: argparse.Namespace) -> str:  # fmt: skip
    def rps(name: str) -> float:
        return next(r.rps for r in rows if r.name == name)

    lines = [
        "| system | req/s | p50 ms | p99 ms | CPU ms/req | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:

        def f(v: float | None, digits: int = 1) -> str:
            return "" if v is None else f"{v:.{digits}f}"

        lines.append(f"| {r.name} | {r.rps:.0f} | {f(r.p50_ms)} | {f(r.p99_ms)} | "
                     f"{f(r.cpu_ms)} | {f(r.rss_mb, 0)} |")  # fmt: skip
    lines.append("")
    lines.append("| target | measured | goal |")
    lines.append("| --- | ---: | ---: |")
    for fmt in ("webp", "jpeg"):
        for conns in args.concurrency:
            ratio = rps(f"originshield cold, {fmt}, c={conns}") / rps(f"libvips limit loop, {fmt}")
            lines.append(f"| cold {fmt} c={conns} / limit loop | {ratio:.2f}x | >= 0.95x |")
        size = sizes[f"originshield-{fmt}"] / sizes[f"limit-{fmt}"] - 1
        lines.append(f"| cold {fmt} output bytes vs loop | {size:+.1%} | within 3% |")
    for workers in (1, 2):
        ratio = rps(f"originshield hot, {workers} process(es)") / rps(
            f"bare aiohttp, {workers} process(es)"
        )
        lines.append(f"| hot, {workers} process(es) / bare aiohttp | {ratio:.2f}x | >= 0.85x |")
    lines.append(f"| stampede: 100 concurrent / 1 alone | {crowd / single:.2f}x "
                 f"({crowd * 1000:.0f} / {single * 1000:.0f} ms) | <= 1.5x |")  # fmt: skip
    cold_rss = max(r.rss_mb or 0 for r in rows if "cold" in r.name)
    lines.append(f"| peak RSS under cold load | {cold_rss:.0f} MB | < 300 MB + caches |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--images", help=f"folder of JPEGs (default {DEFAULT_IMAGES}, else generated)"
    )
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[8, 32])  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per measurement")
    parser.add_argument("--smoke", action="store_true", help="a second per step, no thresholds")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (apt-get install wrk)")
    table = run(args)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
