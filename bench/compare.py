"""Compare server variants on the cold path, each against the libvips limit loop, in turns.

    python bench/compare.py --format jpeg --rounds 6 \\
        base= three="ORIGINSHIELD_TRANSFORM__CONCURRENCY=6" \\
        --tree before=/tmp/before          # a git worktree of another revision

Throughput on a shared 2-CPU machine drifts by about 10% over minutes, more than most single
changes are worth. So every round runs the loop and then each variant right after it, and the
verdict is the median over rounds of each variant's ratio to its own round's loop. Each row
also shows how much of the machine sat idle (``/proc/stat``) and the server's CPU milliseconds
per request: a change can win by wasting less CPU, or by leaving the CPUs idle less often.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import (
    DEFAULT_IMAGES,
    ROOT,
    free_port,
    generate_images,
    limit,
    proc_stats,
    server_env,
    wait_http,
    wrk,
)


def machine() -> tuple[int, int]:
    """(all jiffies, idle + iowait jiffies) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


def idle_share(before: tuple[int, int]) -> float:
    total, idle = machine()
    return (idle - before[1]) / max(1, total - before[0])


def loop_round(images: Path, fmt: str, q: int, seconds: float) -> tuple[float, float]:
    before = machine()
    result = limit(images, fmt, q, seconds, thumbnail=False)
    return float(result["rps"]), idle_share(before)  # type: ignore[arg-type]


def server_round(images: Path, tree: Path, env: dict[str, str], fmt: str, q: int,
                 seconds: float, conns: int, tmp: Path) -> tuple[float, float, float]:  # fmt: skip
    port = free_port()
    full = {**server_env(images, cache=False, extra=env), "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=tree, env=full, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz")
        paths = [f"/{p.name}?w=400&f={fmt}&q={q}" for p in sorted(images.glob("*.jpg"))]
        wrk(base, paths, seconds=1, connections=conns, cold=True, tmp=tmp)  # warm up
        cpu0, _ = proc_stats(proc.pid)
        before = machine()
        rps, _, _, total = wrk(base, paths, seconds=seconds, connections=conns, cold=True, tmp=tmp)
        idle = idle_share(before)
        cpu1, _ = proc_stats(proc.pid)
        return rps, idle, (cpu1 - cpu0) * 1000 / max(1, total)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", metavar="NAME=KEY=VALUE,...",
                        help="a name and environment overrides (none: the defaults)")  # fmt: skip
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                        help="a variant running the code in another checkout")  # fmt: skip
    parser.add_argument("--images", default=str(DEFAULT_IMAGES))
    parser.add_argument("--format", choices=["jpeg", "webp"], default="jpeg")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    variants: dict[str, tuple[Path, dict[str, str]]] = {}
    for spec in args.variants or ["defaults="]:
        name, _, overrides = spec.partition("=")
        env = dict(item.split("=", 1) for item in overrides.split(",") if item)
        variants[name] = (ROOT, env)
    for spec in args.tree:
        name, _, path = spec.partition("=")
        variants[name] = (Path(path).resolve(), {})
    q = 80 if args.format == "jpeg" else 75
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="originshield-compare-") as tmp:
        images = Path(args.images).resolve()
        if not list(images.glob("*.jpg")):
            images = Path(tmp) / "images"
            images.mkdir()
            generate_images(images)
        for n in range(args.rounds):
            loop_rps, loop_idle = loop_round(images, args.format, q, args.seconds)
            line = [f"round {n}: loop {loop_rps:.0f}/s idle {loop_idle:.0%}"]
            for name, (tree, env) in variants.items():
                rps, idle, cpu = server_round(images, tree, env, args.format, q, args.seconds,
                                              args.connections, Path(tmp))  # fmt: skip
                ratios[name].append(rps / loop_rps)
                line.append(f"{name} {rps:.0f}/s idle {idle:.0%} {cpu:.2f} ms")
            print(" | ".join(line), flush=True)
            time.sleep(0.5)
    print(f"\n{args.format}, {args.connections} connections, {args.rounds} rounds of "
          f"{args.seconds:g} s: ratio to the loop of the same round")  # fmt: skip
    for name, values in ratios.items():
        print(f"  {name:12s} median {statistics.median(values):.3f}x  "
              f"best {max(values):.3f}x  worst {min(values):.3f}x")  # fmt: skip


if __name__ == "__main__":
    main()
