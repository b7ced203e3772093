"""Does the app's memory stay flat? Resident size of a served app over many mixed /fuse calls.

    python benchmarks/app_memory.py                 # 200 calls: every example pair, sizes and settings mixed
    python benchmarks/app_memory.py --calls 60 --model path/or/hub-id

Starts ``python app.py`` in a subprocess on a free port (one torch thread), makes the calls through
gradio_client, and reads the server's resident set size (VmRSS) after the first ``--warmup`` calls (20) and at the end.
Prints one line per 20 calls and the growth after the warm-up (issue 16 asks for at most 10 %).
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import PIL.Image
from gradio_client import Client, handle_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def resident_mb(pid: int) -> float:
    """VmRSS of a process in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mixed_calls(folder: Path) -> list[tuple]:
    """(task, path a, path b, steps, resolution) cycling over the examples at their size, downscaled, upscaled
    and with more steps."""
    import app  # the example list of the app itself

    calls = []
    for index, (task, path_a, path_b) in enumerate(app.example_rows()):
        calls.append((task, path_a, path_b, 1, 0))
        calls.append((task, path_a, path_b, 2, 256))
        big_a, big_b = folder / f"{index}_a.png", folder / f"{index}_b.png"
        for source, target in ((path_a, big_a), (path_b, big_b)):
            image = PIL.Image.open(source)
            image.resize((image.width * 2, image.height * 2), PIL.Image.BICUBIC).save(target)
        calls.append((task, str(big_a), str(big_b), 1, 0))
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20, help="growth is measured from after this many calls")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    port = free_port()
    command = [sys.executable, str(REPO / "app.py"), "--port", str(port), "--threads", "1", "--concurrency", "1"]
    if args.model:
        command += ["--model", args.model]
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = None
        for _ in range(600):
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # not up yet
                time.sleep(0.5)
        if client is None:
            raise SystemExit("the app did not start")
        with tempfile.TemporaryDirectory() as folder:
            calls = list(itertools.islice(itertools.cycle(mixed_calls(Path(folder))), args.calls))
            after_warmup = None
            started = time.perf_counter()
            for number, (task, path_a, path_b, steps, resolution) in enumerate(calls, start=1):
                client.predict(task, handle_file(path_a), handle_file(path_b), steps, resolution, False,
                               api_name="/fuse")
                if number % 20 == 0 or number in (args.warmup, len(calls)):
                    rss = resident_mb(server.pid)
                    if number == args.warmup:
                        after_warmup = rss
                    print(f"after {number:4d} calls: {rss:7.1f} MB resident "
                          f"({time.perf_counter() - started:6.1f} s)", flush=True)
        growth = (rss / after_warmup - 1) * 100
        print(f"growth after the first {args.warmup} calls: {growth:+.1f} % ({after_warmup:.0f} -> {rss:.0f} MB)")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
