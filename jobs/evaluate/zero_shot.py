"""Zero-shot (step 0) results, computed once per (model, suite, mode) and reused by every trial.

Every trial of a sweep starts from the same base model, so its step-0 evaluation is the same:
the first trial computes it, the others read it. The cache key hashes the base model's weights
fingerprint, the suite's dataset contents and the evaluation settings; entries live under the
sweep's storage (``<storage>/zero-shot/<key>/``, local or s3) so all nodes of a cluster share
them:

    cache = ZeroShotCache("s3://bucket/sweeps/zero-shot")
    key = zero_shot_key(loaded.fingerprint, suite, evaluator)
    result = cache.get(key) or cache.put(key, evaluator.evaluate(model))
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.evaluate.suite_eval import SuiteEvaluator, SuiteResult
from recipes.common import storage
from recipes.common.cache import cache_root, content_key
from recipes.data.suites import Suite

CACHE_FORMAT = 2
"""Bumped when what is cached changes meaning."""


def zero_shot_key(model_fingerprint: str, suite: Suite, evaluator: SuiteEvaluator) -> str:
    """Content hash of everything a zero-shot evaluation depends on."""
    scorer = evaluator.scorer
    identity = {
        "format": CACHE_FORMAT,
        "model": model_fingerprint,
        "suite": suite.content_hash(),
        "mode": scorer.mode,
        "max_new_tokens": scorer.max_new_tokens if scorer.mode == "generate" else None,
        "batches": [len(rows) for _, rows in evaluator.batches],
    }
    if evaluator.has_freeform:  # generated whatever the mode
        identity["freeform_max_new_tokens"] = {"default": scorer.max_new_tokens, **evaluator.budgets}
    return content_key(identity)


class ZeroShotCache:
    """Zero-shot results stored as ``<root>/<key>/metrics.json`` + ``predictions.parquet``."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root or str(cache_root() / "zero-shot")

    def get(self, key: str) -> SuiteResult | None:
        """The cached result for ``key``, or None."""
        entry = storage.read_json(storage.join(self.root, key, "metrics.json"))
        table_bytes = storage.read_bytes(storage.join(self.root, key, "predictions.parquet"))
        if entry is None or table_bytes is None:
            return None
        predictions = pq.read_table(pa.BufferReader(table_bytes))
        return SuiteResult(metrics=entry["metrics"], predictions=predictions, seconds=entry["seconds"])

    def put(self, key: str, result: SuiteResult) -> SuiteResult:
        """Store ``result`` under ``key`` (predictions first, so a reader never sees half an entry)."""
        buffer = io.BytesIO()
        pq.write_table(result.predictions, buffer)
        storage.write_bytes(storage.join(self.root, key, "predictions.parquet"), buffer.getvalue())
        storage.write_json(
            storage.join(self.root, key, "metrics.json"), {"metrics": result.metrics, "seconds": result.seconds}
        )
        return result
