"""A real Dask cluster on loopback (a scheduler and two one-thread workers as subprocesses): the
assessment's tests and shards run there through prefect-dask and give the local run's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.scale import loopback_cluster
from conftest import goal


@pytest.fixture(scope="module")
def prefect_harness():  # type: ignore[no-untyped-def]
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_sharded_assessment_on_two_dask_workers_equals_local_run(
    tmp_path: Path, image_case, spec_writer, prefect_harness
) -> None:
    from distributed import Client

    from nnassay.flows.lifecycle import assess_runner
    from nnassay.schemas.settings import AssessRequest

    spec = spec_writer(
        image_case,
        [
            goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5),
            goal(
                "NOISY",
                {"kind": "gaussian_noise", "sigma": 0.2},
                "accuracy",
                ">=",
                0.5,
                methods=[{"name": "statistical.noise_accuracy", "params": {"draws": 4}}],
            ),
            goal("FLIPS", {"kind": "uniform_noise", "eps": 0.1}, "label_flip_rate", "<=", 0.5),
        ],
    )
    local = assess_runner(None)(  # the evidence, also when a goal did not pass (run Failed)
        AssessRequest(
            spec_path=spec, output=tmp_path / "local", track=False, prefer_cuda=False, shard_samples=0
        )
    )
    with loopback_cluster(2, log_dir=tmp_path / "dask") as address:
        request = AssessRequest(
            spec_path=spec,
            output=tmp_path / "dask-run",
            prefer_cuda=False,
            shard_samples=64,
            mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        )
        remote = assess_runner(address)(request)
        with Client(address, timeout=30) as client:
            # both workers did work: each ran at least one task of the assessment
            ran = client.run(lambda dask_worker: len(dask_worker.state.log))  # type: ignore[no-untyped-call]
    assert len(ran) == 2 and all(count > 0 for count in ran.values())
    assert [r.model_dump(exclude={"time_s"}) for r in remote.results] == [
        r.model_dump(exclude={"time_s"}) for r in local.results
    ]
    assert [v.model_dump() for v in remote.verdicts] == [v.model_dump() for v in local.verdicts]
    assert remote.overall == local.overall
