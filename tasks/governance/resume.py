"""Runs that survive a crash: cache keys of persisted test results, and earlier attempts in MLflow.

A test's persisted result is reused only when everything that shapes its numbers is the same: the
model and data digests, the planned test (method, parameters, threat, seed, samples, criterion),
the shard, and the code (nnassay version, git commit and the digest of the method's source file).
No Prefect here.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.plan import TestSpec
from nnassay.tasks.governance import history, result_cache
from nnassay.tasks.governance.tracking import Tracker
from nnassay.tasks.io.files import sha256_file
from nnassay.tasks.methods.registry import get_method
from nnassay.tasks.pipeline.evidence import code_version
from nnassay.tasks.pipeline.execute import load_inputs
from nnassay.tasks.pipeline.sharding import Shard

CACHE_DIR = result_cache.CACHE_DIR  # under the run folder: persisted task results, keyed by test_key
OUTPUT_TAG = "nnassay.output"
PREVIOUS_ATTEMPT_TAG = "nnassay.previous_attempt"


@functools.cache
def _code_version() -> str:
    return code_version()


@functools.cache
def method_source_sha256(name: str) -> str:
    """SHA-256 of the source file defining a registered method (uncommitted edits change it)."""
    source = inspect.getsourcefile(type(get_method(name)))
    return sha256_file(Path(source)) if source else "unknown"


def test_key(
    test: TestSpec, spec: AssessmentSpec, *, prefer_cuda: bool, step: str = "test", shard: Shard | None = None
) -> str:
    """The cache key of one test (or one shard, or the merge of a sharded test)."""
    model, data = load_inputs(spec, prefer_cuda=prefer_cuda)
    payload = {
        "step": step,
        "model": model.sha256,
        "data": data.sha256,
        "provider": model.provider,
        "test": test.model_dump(mode="json", exclude={"estimate_s"}),  # timed afresh per process
        "shard": [shard.start, shard.stop] if shard else None,
        "code": _code_version(),
        "method_source": method_source_sha256(test.method),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cache_dir(output: Path) -> Path:
    """Where the persisted task results of a run folder live."""
    return output.resolve() / CACHE_DIR


def result_options(output: Path, *, resume: bool) -> dict[str, Any]:
    """Prefect task options of a persisted test result: JSON with its digest in the run folder's
    cache (``result_cache``); ``resume=False`` recomputes everything."""
    return {
        "result_storage": cache_dir(output),
        "result_serializer": result_cache.result_serializer(),
        "refresh_cache": not resume,
    }


def screen_cache(
    output: Path, test: TestSpec, spec: AssessmentSpec, *, prefer_cuda: bool, shards: list[Shard]
) -> list[str]:
    """Before a test is submitted: move aside each of its cache entries that is not exactly what
    nnassay writes (``result_cache.screen``), so Prefect never reads it; return why, per entry."""
    folder = cache_dir(output)
    if not folder.is_dir():
        return []
    if shards:
        keys = [test_key(test, spec, prefer_cuda=prefer_cuda, step="merge")]
        keys += [test_key(test, spec, prefer_cuda=prefer_cuda, step="shard", shard=s) for s in shards]
    else:
        keys = [test_key(test, spec, prefer_cuda=prefer_cuda)]
    found = [result_cache.screen(folder / key) for key in keys]
    return [reason for reason in found if reason is not None]


def cache_notes(output: Path, since: datetime) -> dict[str, JsonValue]:
    """For the evidence's provenance: the cached results refused (and so computed again) in this
    attempt; empty when none was."""
    refused: list[JsonValue] = [
        {key: value for key, value in note.items()}
        for note in result_cache.rejections(cache_dir(output), since=since)
    ]
    return {"result_cache_refused": refused} if refused else {}


def crashed_attempts(
    past: history.SpecHistory, output: Path, *, exclude: str | None = None
) -> list[history.PastAssessment]:
    """Earlier unfinished attempts (RUNNING or FAILED, newest first) in the same run folder, back to
    the last finished assessment there."""
    folder = str(output.resolve())
    found = []
    for run in past.runs:
        if run.run_id == exclude or run.tags.get(OUTPUT_TAG) != folder:
            continue
        if run.status == "FINISHED":
            break
        found.append(run)
    return found


def link_attempts(tracker: Tracker, run_id: str, output: Path, past: history.SpecHistory) -> str | None:
    """Tag the new run with its folder, mark crashed attempts there FAILED, link to the newest one."""
    tracker.set_tags(run_id, {OUTPUT_TAG: str(output.resolve())})
    earlier = crashed_attempts(past, output, exclude=run_id)
    for attempt in earlier:
        if attempt.status == "RUNNING":
            tracker.set_tags(
                attempt.run_id,
                {
                    "nnassay.error": "the assessment process stopped before the run"
                    f" finished (crash or kill); superseded by run {run_id}"
                },
            )
            tracker.finish(attempt.run_id, "FAILED")
    if not earlier:
        return None
    tracker.set_tags(run_id, {PREVIOUS_ATTEMPT_TAG: earlier[0].run_id})
    return earlier[0].run_id
