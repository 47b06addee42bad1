"""A run killed midway (SIGKILL of the whole process group) and started again in the same folder
recomputes only what had not finished, gives the numbers of an uninterrupted run, and marks the
crashed attempt's MLflow run FAILED."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TinyCase, build_slow_case, goal, write_spec

SHARD = 512


@pytest.fixture(scope="module")
def slow_case(tmp_path_factory: pytest.TempPathFactory) -> TinyCase:
    return build_slow_case(tmp_path_factory.mktemp("slow"))


def _nnassay(spec: Path, out: Path, uri: str, home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PREFECT_HOME": str(home), "NNASSAY_SHARD_SAMPLES": str(SHARD)}
    cmd = [
        sys.executable,
        "-m",
        "nnassay.flows.cli.app",
        "assess",
        str(spec),
        "--output",
        str(out),
        "--cpu",
        "--mlflow-uri",
        uri,
    ]
    return subprocess.Popen(
        cmd,
        env=env,
        cwd=Path(__file__).parent.parent,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in folder.iterdir()
        if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_run_resumes_without_recomputing_finished_work(tmp_path: Path, slow_case: TinyCase) -> None:
    from mlflow.tracking import MlflowClient

    from nnassay.schemas.evidence import EvidenceBundle
    from nnassay.tasks.governance import resume
    from nnassay.tasks.pipeline import execute
    from nnassay.tasks.pipeline.sharding import plan_shards

    spec = write_spec(
        tmp_path / "spec",
        slow_case,
        [
            goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5),
            goal(
                "SLOW",
                {"kind": "gaussian_noise", "sigma": 0.1},
                "accuracy",
                ">=",
                0.5,
                methods=[{"name": "statistical.noise_accuracy", "params": {"draws": 600}}],
            ),
        ],
    )
    out, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec_obj, _ = execute.state_goals(spec, prefer_cuda=False)
    clean, slow = execute.preflight(spec, prefer_cuda=False).tests
    shards = plan_shards(slow, SHARD)
    assert len(shards) == 4
    keys = {
        "clean": resume.test_key(clean, spec_obj, prefer_cuda=False),
        "merge": resume.test_key(slow, spec_obj, prefer_cuda=False, step="merge"),
        **{
            f"shard{s.index}": resume.test_key(slow, spec_obj, prefer_cuda=False, step="shard", shard=s)
            for s in shards
        },
    }
    cache = resume.cache_dir(out)

    # 1. start, and kill the whole process group once the clean test and a shard are persisted
    proc = _nnassay(spec, out, uri, tmp_path / "prefect")
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            done = {p.name for p in cache.iterdir()} if cache.is_dir() else set()
            if keys["clean"] in done and any(keys[f"shard{i}"] in done for i in range(4)):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]!r}"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    before = _snapshot(cache)
    assert keys["merge"] not in before and len(before) < 6, "the kill came too late to test resuming"
    assert not (out / "evidence.json").exists()
    client = MlflowClient(tracking_uri=uri)
    (crashed,) = client.search_runs(client.get_experiment_by_name("nnassay/tiny").experiment_id)
    assert crashed.info.status == "RUNNING"

    # 2. start again in the same folder: finished work is reused untouched, the rest is computed
    again = _nnassay(spec, out, uri, tmp_path / "prefect")
    _, err = again.communicate(timeout=240)
    assert again.returncode in (0, 1), err.decode()[-3000:]
    after = _snapshot(cache)
    assert all(after[name] == stamp for name, stamp in before.items())  # not recomputed or rewritten
    assert set(keys.values()) <= set(after)

    # 3. the evidence equals an uninterrupted run's (timings aside)
    bundle = EvidenceBundle.model_validate_json((out / "evidence.json").read_text())
    fresh = [execute.run_test(t, spec_obj, tmp_path / "fresh", prefer_cuda=False) for t in (clean, slow)]
    assert [r.model_dump(exclude={"time_s"}) for r in bundle.results] == [
        r.model_dump(exclude={"time_s"}) for r in fresh
    ]

    # 4. MLflow: the crashed attempt is FAILED, the new run FINISHED and linked to it
    crashed_now = client.get_run(crashed.info.run_id)
    assert crashed_now.info.status == "FAILED" and "superseded" in crashed_now.data.tags["nnassay.error"]
    new = client.get_run(bundle.provenance.mlflow_run_id)
    assert new.info.status == "FINISHED"
    assert new.data.tags["nnassay.previous_attempt"] == crashed.info.run_id
