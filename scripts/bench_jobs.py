"""Job throughput through RabbitMQ with 1 and then 2 worker processes.

For each worker count the script starts, on 127.0.0.1, a real API server (uvicorn) and that many
``audioproc worker`` processes (``TORCH_THREADS=1`` each) on a queue, a Redis prefix and a storage
directory of their own (so no run sees another's results), and runs two phases of ``--jobs`` jobs
each, every job a different recording:

drain
    The jobs are submitted to ``POST /jobs`` while no worker runs; then the workers start and
    empty the queue. jobs/s is measured between the 10th and the 90th percentile completion, so
    it is what the workers sustain together, free of their start-up skew and of the API.
burst
    With the workers consuming, one client submits the jobs back to back. jobs/s is jobs / (last
    done − first accepted): the whole system, API included, on the same CPUs. End-to-end latency
    (p50, p95) runs from the API accepting a job (``created_at``) to a worker marking it done
    (``finished_at``); the service time from a worker starting the job to marking it done.
    CPU time per job (from /proc, over the burst): all workers together, and the API server —
    figures that other work on the machine does not move much, unlike the jobs/s.

Timestamps come from the job states in Redis (polled there every 100 ms, so that polling adds no
load to the API). Input: 10 s cuts of ``../shared/data/speech/*.ogg`` (joined, cut at evenly
spaced offsets), as 16-bit PCM WAV at the recordings' own 22.05 kHz.

    python scripts/bench_jobs.py --repeats 3 --markdown /tmp/bench_jobs.md

With ``--repeats N`` the worker counts run N times, interleaved, and the table shows medians
(other work on the machine moves single runs a lot; the load average is reported). Needs
RabbitMQ (``--amqp-url``) and Redis (``--redis-url``); one run of both worker counts takes about
50 s.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import httpx
import numpy as np
import redis
import soundfile as sf
from evalkit import cpu_description  # scripts/evalkit.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "data" / "speech"


def build_recordings(count: int, seconds: float) -> list[bytes]:
    """``count`` different ``seconds``-long cuts of the shared speech, as PCM16 WAV."""
    clips = []
    rate = None
    for path in sorted(SPEECH.glob("*.ogg")):
        samples, sr = sf.read(path, dtype="float32", always_2d=True)
        if rate is not None and sr != rate:
            raise SystemExit(f"{path}: {sr} Hz, expected {rate} Hz like the others")
        rate = sr
        clips.append(samples.mean(axis=1))
    if rate is None:
        raise SystemExit(f"no recordings in {SPEECH}")
    speech = np.concatenate(clips)
    length = int(seconds * rate)
    while len(speech) < length + count:  # room for `count` distinct offsets
        speech = np.concatenate([speech, speech])
    offsets = np.linspace(0, len(speech) - length, count).astype(int)
    recordings = []
    for offset in offsets:
        buffer = io.BytesIO()
        sf.write(buffer, speech[offset : offset + length], rate, format="WAV", subtype="PCM_16")
        recordings.append(buffer.getvalue())
    if len(set(recordings)) != count:
        raise SystemExit("the cuts are not all different; use fewer jobs or shorter cuts")
    return recordings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def consumers(amqp_url: str, queue: str) -> int:
    async def declare() -> int:
        connection = await aio_pika.connect(amqp_url, timeout=5)
        async with connection:
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                return 0
            return int(declared.declaration_result.consumer_count or 0)

    return asyncio.run(declare())


def delete_queues(amqp_url: str, prefix: str) -> None:
    async def delete() -> None:
        connection = await aio_pika.connect(amqp_url, timeout=5)
        async with connection:
            channel = await connection.channel()
            for suffix in ("", ".dead", *(f".retry.{ms}ms" for ms in (2000, 4000, 8000, 16000))):
                await channel.queue_delete(prefix + suffix)

    asyncio.run(delete())


@dataclass
class Phase:
    """Timings of one batch of jobs, from the job states (Unix time, s)."""

    created: np.ndarray
    started: np.ndarray
    finished: np.ndarray

    @property
    def jobs(self) -> int:
        return len(self.finished)

    def e2e_percentile(self, q: float) -> float:
        """End-to-end latency (accepted → done) percentile, s."""
        return float(np.percentile(self.finished - self.created, q))

    def service_p50_ms(self) -> float:
        return float(np.percentile(self.finished - self.started, 50) * 1000)

    def throughput(self) -> float:
        """Jobs/s from the first job accepted to the last done."""
        return self.jobs / float(self.finished.max() - self.created.min())

    def steady_throughput(self) -> float:
        """Jobs/s between the 10th and the 90th percentile completion (what the workers sustain
        once all of them run, whatever their start-up skew)."""
        done = np.sort(self.finished)
        lo, hi = int(0.1 * self.jobs), int(0.9 * self.jobs)
        return (hi - lo) / float(done[hi - 1] - done[lo - 1 if lo else 0])


@dataclass
class Row:
    workers: int
    drain: Phase
    burst: Phase
    #: CPU time per job in the burst phase, ms: all workers together, and the API server.
    worker_cpu_ms: float
    api_cpu_ms: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(
    what: str, predicate: Callable[[], bool], timeout_s: float, procs: list[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"a process exited while waiting for {what}: {proc.args}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


class Bench:
    """One API server and ``workers`` workers on a queue, Redis prefix and storage of their own."""

    def __init__(self, workers: int, amqp_url: str, redis_url: str, log_dir: Path) -> None:
        self.workers = workers
        self.amqp_url = amqp_url
        self.log_dir = log_dir
        self.name = f"bench-jobs-{uuid.uuid4().hex[:10]}"
        self.storage = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
        self.env = {
            **os.environ,
            "AMQP_URL": amqp_url,
            "AMQP_QUEUE": self.name,
            "REDIS_URL": redis_url,
            "CACHE_PREFIX": f"{self.name}:",
            "STORAGE_DIR": str(self.storage),
            "TORCH_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "PIPELINE_CONCURRENCY": "1",
            "PYTHONPATH": str(ROOT),
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.store = redis.Redis.from_url(redis_url)
        self.port = free_port()
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def _start(self, args: list[str], log_name: str, env: dict[str, str]) -> None:
        log = (self.log_dir / log_name).open("wb")
        self.procs.append(
            subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        )

    def start_api(self) -> None:
        self._start(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            f"api-{self.workers}.log",
            {**self.env, "WARMUP": "false"},
        )

        def up() -> bool:
            try:
                return self.client.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until("the API", up, 60, self.procs)

    def start_workers(self) -> None:
        for i in range(self.workers):
            self._start(
                [sys.executable, "-m", "app.cli", "worker", "--log-level", "warning"],
                f"worker-{self.workers}-{i}.log",
                {**self.env, "WORKER_METRICS_PORT": str(free_port())},
            )

    def wait_consumers(self) -> None:
        wait_until(
            f"{self.workers} consumers",
            lambda: consumers(self.amqp_url, self.name) == self.workers,
            120,
            self.procs,
        )

    def submit(self, recordings: list[bytes]) -> list[str]:
        job_ids = []
        for i, data in enumerate(recordings):
            response = self.client.post("/jobs", files={"file": (f"cut-{i}.wav", data)})
            if response.status_code != 202:
                raise SystemExit(f"POST /jobs: {response.status_code} {response.text}")
            job_ids.append(response.json()["job_id"])
        if len(set(job_ids)) != len(recordings):
            raise SystemExit("two cuts got the same job id")
        return job_ids

    def wait_done(self, job_ids: list[str]) -> Phase:
        keys = [f"{self.name}:job:{job_id}" for job_id in job_ids]

        def states() -> list[dict[bytes, bytes]]:
            pipe = self.store.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            return list(pipe.execute())

        wait_until(
            "every job",
            lambda: all(s.get(b"status") in (b"done", b"failed") for s in states()),
            600,
            self.procs,
        )
        final = states()
        failed = [s for s in final if s[b"status"] != b"done"]
        if failed:
            raise SystemExit(f"{len(failed)} job(s) failed, e.g. {failed[0]}")
        attempts = {int(s[b"attempts"]) for s in final}
        if attempts != {1}:
            raise SystemExit(f"unexpected attempt counts {attempts}")
        if len({s[b"result_id"] for s in final}) != len(final):
            raise SystemExit("duplicate result ids")
        return Phase(
            created=np.array([float(s[b"created_at"]) for s in final]),
            started=np.array([float(s[b"started_at"]) for s in final]),
            finished=np.array([float(s[b"finished_at"]) for s in final]),
        )

    def close(self) -> None:
        for proc in self.procs:  # only the processes started here, by their pid
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.client.close()
        for key in self.store.scan_iter(f"{self.name}:*"):
            self.store.delete(key)
        self.store.close()
        delete_queues(self.amqp_url, self.name)
        shutil.rmtree(self.storage, ignore_errors=True)


def run(workers: int, recordings: list[bytes], amqp_url: str, redis_url: str, log_dir: Path) -> Row:
    """Drain: queue half the recordings with no worker running, then start the workers. Burst:
    with the workers consuming, submit the other half."""
    half = len(recordings) // 2
    bench = Bench(workers, amqp_url, redis_url, log_dir)
    try:
        bench.start_api()
        drain_ids = bench.submit(recordings[:half])
        bench.start_workers()
        drain = bench.wait_done(drain_ids)
        bench.wait_consumers()
        before = [cpu_seconds(p.pid) for p in bench.procs]
        burst = bench.wait_done(bench.submit(recordings[half:]))
        used = [cpu_seconds(p.pid) - b for p, b in zip(bench.procs, before, strict=True)]
        return Row(
            workers,
            drain,
            burst,
            worker_cpu_ms=sum(used[1:]) / burst.jobs * 1000,
            api_cpu_ms=used[0] / burst.jobs * 1000,
        )
    finally:
        bench.close()


def table(runs: dict[int, list[Row]]) -> list[list[str]]:
    """Per worker count, the median over the repeats (with the range of the throughputs)."""

    def median(rows: list[Row], metric: Callable[[Row], float]) -> float:
        return float(np.median([metric(r) for r in rows]))

    def spread(rows: list[Row], metric: Callable[[Row], float]) -> str:
        values = [metric(r) for r in rows]
        mid = f"{np.median(values):.1f}"
        return mid if len(values) == 1 else f"{mid} ({min(values):.1f}–{max(values):.1f})"

    def drain(r: Row) -> float:
        return r.drain.steady_throughput()

    def burst(r: Row) -> float:
        return r.burst.throughput()

    first = next(iter(runs.values()))
    drain_base, burst_base = median(first, drain), median(first, burst)
    out = [
        [
            "workers",
            "drain jobs/s",
            "drain speed-up",
            "burst jobs/s",
            "burst speed-up",
            "burst e2e p50 s",
            "burst e2e p95 s",
            "service p50 ms",
            "worker CPU ms/job",
            "API CPU ms/job",
        ]
    ]
    for workers, rows in runs.items():
        out.append(
            [
                str(workers),
                spread(rows, drain),
                f"{median(rows, drain) / drain_base:.2f}×",
                spread(rows, burst),
                f"{median(rows, burst) / burst_base:.2f}×",
                f"{median(rows, lambda r: r.burst.e2e_percentile(50)):.2f}",
                f"{median(rows, lambda r: r.burst.e2e_percentile(95)):.2f}",
                f"{median(rows, lambda r: r.burst.service_p50_ms()):.0f}",
                f"{median(rows, lambda r: r.worker_cpu_ms):.1f}",
                f"{median(rows, lambda r: r.api_cpu_ms):.1f}",
            ]
        )
    return out


def render_text(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---:|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per run (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each cut, s")
    parser.add_argument("--workers", default="1,2", help="worker counts to run (default 1,2)")
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown here")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs per worker count, interleaved; the table shows medians (default 1)",
    )
    args = parser.parse_args()

    recordings = build_recordings(2 * args.jobs, args.seconds)
    print(
        f"{args.jobs} jobs per phase of {args.seconds:g} s speech "
        f"({len(recordings[0]) / 1e6:.2f} MB WAV each) on {cpu_description()}",
        flush=True,
    )
    counts = [int(w) for w in args.workers.split(",")]
    runs: dict[int, list[Row]] = {workers: [] for workers in counts}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench-jobs-logs-") as logs:
        for repeat in range(args.repeats):
            for workers in counts:
                row = run(workers, recordings, args.amqp_url, args.redis_url, Path(logs))
                runs[workers].append(row)
                load.append(os.getloadavg()[0])
                print(
                    f"  run {repeat + 1}, {workers} worker(s): drain "
                    f"{row.drain.steady_throughput():.1f} jobs/s, burst "
                    f"{row.burst.throughput():.1f} jobs/s (1-min load {load[-1]:.1f})",
                    flush=True,
                )
    cells = table(runs)
    print(render_text(cells))
    if args.markdown:
        options = "".join(
            f" --{name} {value}"
            for name, value, default in (
                ("jobs", args.jobs, 200),
                ("repeats", args.repeats, 1),
                ("workers", args.workers, "1,2"),
            )
            if value != default
        )
        args.markdown.write_text(
            f"{args.jobs} jobs per phase of {args.seconds:g} s speech through RabbitMQ; "
            f"{cpu_description()}; medians of {args.repeats} run(s) (range in brackets); "
            f"1-minute load average {min(load):.1f}–{max(load):.1f} during the runs. Command: "
            f"`python scripts/bench_jobs.py{options}`.\n\n" + render_markdown(cells) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
