"""Scale benchmark: one sampling-heavy assessment on local threads and on 1 and 2 Dask workers.

Usage: python benchmarks/scale.py [--draws 1000] [--repeat 1] [--shard 64]

Starts a Dask scheduler and workers on loopback (``dask scheduler`` / ``dask worker`` subprocesses,
one thread each), runs the bundled digits assessment with heavy noise sampling through prefect-dask,
checks that every run's results equal the local one's, and prints wall times and speed-ups. Then it
measures the per-unit costs (one noise-draw prediction per sample, one clean prediction) and models
how a large assessment would spread over 16 workers. ``loopback_cluster`` is shared with the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
QUIET = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def loopback_cluster(workers: int, *, log_dir: Path, timeout_s: float = 90) -> Iterator[str]:
    """A Dask scheduler and ``workers`` one-thread workers on 127.0.0.1; yields the address; stops them."""
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, **QUIET, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "NNASSAY_ORT_THREADS": "1"}
    log_dir.mkdir(parents=True, exist_ok=True)
    commands = [["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]]
    commands += [
        [
            "dask",
            "worker",
            address,
            "--host",
            "127.0.0.1",
            "--nthreads",
            "1",
            "--nworkers",
            "1",
            "--no-dashboard",
            "--name",
            f"w{i}",
            "--local-directory",
            str(log_dir / f"w{i}"),
        ]
        for i in range(workers)
    ]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, cmd in enumerate(commands):
            log = open(log_dir / f"{cmd[1]}{i}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append(
                subprocess.Popen(
                    cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        with Client(address, timeout=timeout_s) as client:
            client.wait_for_workers(workers, timeout=timeout_s)
        yield address
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)


def heavy_spec(folder: Path, draws: int) -> Path:
    """The digits assessment's clean and noise goals, with ``draws`` noise draws per sample."""
    spec = yaml.safe_load((REPO / "examples/digits/assessment.yaml").read_text())
    for key in ("model", "data"):
        spec[key]["path"] = str(REPO / "examples/digits" / spec[key]["path"])
    noise = ("gaussian_noise", "uniform_noise")
    spec["goals"] = [g for g in spec["goals"] if g["threat"]["kind"] in ("none", *noise)]
    for g in spec["goals"]:
        if g["threat"]["kind"] in noise:
            g["methods"] = [{"name": "statistical.noise_accuracy", "params": {"draws": draws}}]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "heavy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_once(spec: Path, out: Path, *, dask: str | None, shard: int) -> tuple[float, list[dict], list[float]]:
    """Wall time of one assessment (no MLflow), its results without timings, and the CPU seconds each
    Dask worker spent on it (empty for threads)."""
    from nnassay.flows.assess import assess
    from nnassay.flows.lifecycle import assess_runner
    from nnassay.schemas.settings import AssessRequest

    request = AssessRequest(
        spec_path=spec, output=out, track=False, prefer_cuda=False, shard_samples=shard, resume=False
    )
    cpu_before = _worker_cpu(dask)
    started = time.perf_counter()
    bundle = (assess_runner(dask) if dask else assess)(request)
    elapsed = time.perf_counter() - started
    cpu = [after - before for before, after in zip(cpu_before, _worker_cpu(dask), strict=True)]
    return elapsed, [r.model_dump(exclude={"time_s"}) for r in bundle.results], cpu


def _worker_cpu(address: str | None) -> list[float]:
    """CPU seconds (user + system) used so far by each worker process of the cluster."""
    if not address:
        return []
    from distributed import Client

    def used() -> float:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    with Client(address, timeout=30) as client:
        return [v for _, v in sorted(client.run(used).items())]


def unit_costs(folder: Path, *, corruption_samples: int = 100, instances: int = 20) -> dict[str, float]:
    """Measured seconds per unit on the digits CNN, in this process: one image under one corruption at
    one severity (empirical.corruption_accuracy over all 19 x 5), one verification instance
    (formal.local_robustness at eps 0.01), one noisy prediction (statistical.noise_accuracy)."""
    from nnassay.tasks.pipeline import execute

    spec = yaml.safe_load((REPO / "examples/digits/assessment.yaml").read_text())
    for key in ("model", "data"):
        spec[key]["path"] = str(REPO / "examples/digits" / spec[key]["path"])
    base = {k: spec["goals"][0][k] for k in ("risk", "controls")}
    spec["goals"] = [
        {
            **base,
            "id": "C",
            "statement": "corruptions",
            "threat": {"kind": "corruption"},
            "metric": "mean_accuracy",
            "criterion": {"comparator": ">=", "threshold": 0.5},
            "budget": {"samples": corruption_samples},
        },
        {
            **base,
            "id": "V",
            "statement": "verification",
            "threat": {"kind": "linf_ball", "eps": 0.01},
            "metric": "verified_fraction",
            "criterion": {"comparator": ">=", "threshold": 0.5},
            "methods": [{"name": "formal.local_robustness"}],
            "budget": {"samples": instances},
        },
        {
            **base,
            "id": "N",
            "statement": "noise",
            "threat": {"kind": "gaussian_noise", "sigma": 0.2},
            "metric": "accuracy",
            "criterion": {"comparator": ">=", "threshold": 0.5},
            "methods": [{"name": "statistical.noise_accuracy", "params": {"draws": 50, "sweep": [0.2]}}],
        },
    ]
    path = folder / "units.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    loaded, _ = execute.state_goals(path, prefer_cuda=False)
    tests = {t.goal_id: t for t in execute.preflight(path, prefer_cuda=False).tests}
    units = {"C": corruption_samples * 19 * 5, "V": instances, "N": 540 * 50}
    costs = {}
    for goal_id, name in (
        ("C", "corruption_image_s"),
        ("V", "verification_instance_s"),
        ("N", "noisy_prediction_s"),
    ):
        result = execute.run_test(tests[goal_id], loaded, folder / "units", prefer_cuda=False)
        assert result.status.value != "error", f"{goal_id}: {result.reason}"
        costs[name] = result.time_s / units[goal_id]
    return costs


def large_job_model(
    costs: dict[str, float],
    *,
    workers: int = 16,
    images: int = 10_000,
    corruptions: int = 19,
    severities: int = 5,
    instances: int = 1_000,
    shard: int = 2048,
    overhead_s: float = 0.05,
) -> list[str]:
    """How 10,000 images x 19 corruptions x 5 severities and 1,000 verification instances spread."""
    corrupt_units = corruptions * severities * math.ceil(images / shard)
    corrupt_s = corruptions * severities * images * costs["corruption_image_s"]
    per_corrupt_unit = corrupt_s / corrupt_units + overhead_s
    verify_s = costs["verification_instance_s"]
    units = [per_corrupt_unit] * corrupt_units + [verify_s + overhead_s] * instances
    loads = [0.0] * workers
    for cost in sorted(units, reverse=True):  # longest first onto the least loaded worker (LPT)
        loads[loads.index(min(loads))] += cost
    serial = sum(units)
    return [
        f"- corruptions: {corruptions} x {severities} x ceil({images}/{shard}) = {corrupt_units} shard tasks of"
        f" {per_corrupt_unit:.1f} s ({costs['corruption_image_s'] * 1e3:.2f} ms per image and corruption,"
        f" + {overhead_s * 1e3:.0f} ms task overhead); {corrupt_s / 3600:.2f} h in all",
        f"- verification: {instances} instance tasks of {verify_s:.2f} s (measured per instance at eps 0.01)"
        f" = {instances * verify_s / 3600:.2f} h",
        f"- one worker: {serial / 3600:.2f} h; {workers} workers (longest task first onto the least loaded):"
        f" makespan {max(loads) / 3600:.2f} h, loads {min(loads) / 3600:.2f} to {max(loads) / 3600:.2f} h,"
        f" speed-up {serial / max(loads):.1f}x ({serial / max(loads) / workers:.0%} efficiency)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--shard", type=int, default=64, help="samples per shard (0: no sharding)")
    args = parser.parse_args()
    os.environ.update(QUIET)
    work = Path(tempfile.mkdtemp(prefix="nnassay-scale-"))
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
    spec = heavy_spec(work, args.draws)
    warm = heavy_spec(work / "warm-spec", 1)
    lines = [
        f"{time.strftime('%Y-%m-%d')}, {platform.node()}, nproc {os.cpu_count()}, {_cpu()}, python "
        f"{platform.python_version()}; digits assessment, 540 samples, 3 noise goals x 4 strengths x"
        f" {args.draws} draws; shards of {args.shard} samples; best of {args.repeat}"
    ]
    times: dict[str, float] = {}
    reference = None
    runs: list[tuple[str, int]] = [("threads (2)", 0), ("dask 1 worker", 1), ("dask 2 workers", 2)]
    for label, workers in runs:
        best, load, cpu = math.inf, os.getloadavg()[0], []
        with contextlib.ExitStack() as stack:
            address = (
                stack.enter_context(loopback_cluster(workers, log_dir=work / f"dask{workers}"))
                if workers
                else None
            )
            run_once(warm, work / "warm", dask=address, shard=args.shard)  # imports and models on the workers
            for i in range(args.repeat):
                elapsed, results, used = run_once(
                    spec, work / f"{workers}-{i}", dask=address, shard=args.shard
                )
                reference = reference or results
                assert results == reference, f"{label}: results differ from the first run"
                best, cpu = (elapsed, used) if elapsed < best else (best, cpu)
        times[label] = best
        busy = f"; worker CPU {' + '.join(f'{c:.1f}' for c in cpu)} s" if cpu else ""
        lines.append(f"- {label}: {best:.1f} s wall{busy} (load average {load:.1f} before)")
        if len(cpu) > 1:
            lines.append(
                f"  - balance: total worker CPU / busiest worker = {sum(cpu) / max(cpu):.2f}x"
                " (the speed-up if each worker had a core to itself)"
            )
    lines.append(
        f"- speed-up 1 -> 2 Dask workers (wall): {times['dask 1 worker'] / times['dask 2 workers']:.2f}x;"
        " results identical in every run"
    )
    costs = unit_costs(work)
    lines.append(
        f"- measured unit costs (digits CNN, one process, load average {os.getloadavg()[0]:.1f}):"
        f" {costs['noisy_prediction_s'] * 1e6:.1f} us per noisy prediction,"
        f" {costs['corruption_image_s'] * 1e3:.2f} ms per image and corruption,"
        f" {costs['verification_instance_s']:.2f} s per verification instance"
    )
    lines += large_job_model(costs)
    print("\n".join(lines))


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
