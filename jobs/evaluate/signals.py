"""Forgetting signals measured at a trial's evaluations, beside the suite's quadrant accuracies.

    signals = TrialSignals(("output_drift", "vision_probe"), load_suite("toy"), processor, fingerprint, cache_root)
    values = signals.measure(model, base_model=model)   # step 0: the base's drift reference is computed or read
    values = signals.measure(model)                      # {"signal/output_kl": 0.02, ..., "signal_time/output_drift": 0.4}

Each signal reads a few fixed rows of the trial's own suite, so a paper suite probes a paper model
with paper data (``SignalRows``):

- ``counting_bias`` (the selective-tuning paper, LMM-CL): greedy generation on the ``ood_ood``
  quadrant's questions; the mean probability mass on number tokens per generated step
  (``jobs.evaluate.probe_runs.counting_probe``), in [0, 1].
- ``classname_rate`` (the forgetting paper's Figure 3): the suite's questions whose rows carry
  ``meta.classname_option``; the percent of wrong answers that picked the image's class name.
- ``output_drift`` (LMM-CL's output-distribution shift): the next-token distribution at the
  answer position of the OOD-text quadrants' questions (``ood_id`` with images, ``ood_ood`` with
  text-only ones in the toy suite); ``output_kl`` is the mean KL(base || current) in nats and
  ``top1_agreement`` the percent of prompts whose most likely token is the base's. The base's
  distributions are computed once per (model, rows) and cached (``DriftReferenceCache``); only
  its top ``DRIFT_TOP_K`` log-probabilities are kept, and the KL is taken between the two
  distributions coarsened to those ``k`` tokens plus one "every other token" outcome
  (``coarse_kl``), a lower bound of the full KL that equals it when the base's tail is empty.
- ``vision_probe`` (EMT: the MLLM as an image classifier vs its vision encoder): a logistic
  regression on the image features the vision tower and projector hand the LLM, mean-pooled over
  the image's tokens, for the ``id_id`` quadrant's images (labels: the right option's text),
  trained on a fixed half of the rows and scored on the other half, refitted at every measurement
  (``linear_probe_accuracy``); in percent, to read beside the MLLM's own ``acc/q/id_id``.

Every measurement also gives each signal's cost in seconds (``contract.layout.signal_time_metric``).
"""

from __future__ import annotations

import io
import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from contract.layout import SIGNAL_VALUES, SIGNALS, signal_metric, signal_time_metric
from jobs.evaluate.image_features import FrozenImageFeatures
from jobs.evaluate.probe_runs import classname_probe, counting_probe
from jobs.evaluate.scoring import batches, to_model
from recipes.common import storage
from recipes.common.cache import content_key
from recipes.data.collate import RecordCollator
from recipes.data.registry import dataset_name
from recipes.data.row_source import open_rows
from recipes.data.schema import LETTERS, MCQ_KIND, row_kind
from recipes.data.suites import Suite

SIGNAL_SAMPLES = 64
"""Rows each of counting_bias, classname_rate and output_drift reads."""
VISION_PROBE_ROWS = 256
"""``id_id`` rows of the vision probe: half train the linear probe, half score it."""
COUNTING_NEW_TOKENS = 8
"""Greedy steps of the counting-bias probe."""
DRIFT_TOP_K = 64
"""Base log-probabilities kept per drift prompt (the cached reference)."""
DRIFT_CACHE_FORMAT = 1
"""Bumped when what the drift reference cache holds changes meaning."""


def first_rows(datasets: Sequence[str], count: int, keep=lambda row: True) -> list[dict]:
    """Up to ``count`` rows taken in turn from ``datasets`` (row 0 of each, then row 1, ...), those ``keep`` accepts."""
    sources = [open_rows(name) for name in datasets]
    taken: dict[int, list[dict]] = {
        index: [row for row in source.take(range(min(source.num_rows, count))) if keep(row)]
        for index, source in enumerate(sources)
    }
    rows, position = [], 0
    while len(rows) < count and any(position < len(found) for found in taken.values()):
        rows += [found[position] for found in taken.values() if position < len(found)]
        position += 1
    return rows[:count]


def has_classname_option(row: dict) -> bool:
    """Whether a row carries the letter of its class-name distractor (``meta.classname_option``)."""
    return "classname_option" in json.loads(row.get("meta") or "{}")


def class_label(row: dict) -> str:
    """A row's class for the vision probe: the right option's text (MCQ) or the answer (free-form)."""
    if row_kind(row) == MCQ_KIND:
        return str(row["options"][LETTERS.index(row["answer"].strip().upper())])
    return str(row["answer"])


@dataclass
class SignalRows:
    """The fixed rows each signal reads, taken from the trial's suite."""

    counting: list[dict]
    """``ood_ood`` questions (counting_bias)."""
    classname: list[dict]
    """Questions with ``meta.classname_option`` from any quadrant (classname_rate)."""
    drift: list[dict]
    """``ood_id`` and ``ood_ood`` questions in turn (output_drift)."""
    vision: list[dict]
    """``id_id`` rows with an image (vision_probe)."""

    @classmethod
    def of_suite(
        cls, suite: Suite, names: Sequence[str], samples: int = SIGNAL_SAMPLES, vision_rows: int = VISION_PROBE_ROWS
    ) -> SignalRows:
        """The rows of ``names`` (the others stay empty); a signal without rows raises ValueError naming it."""
        quadrants = suite.quadrants
        wanted = set(names)
        rows = cls(
            counting=first_rows(quadrants["ood_ood"], samples) if "counting_bias" in wanted else [],
            classname=(
                first_rows([d for _, d in suite.entries()], samples, has_classname_option)
                if "classname_rate" in wanted
                else []
            ),
            drift=first_rows([*quadrants["ood_id"], *quadrants["ood_ood"]], samples)
            if "output_drift" in wanted
            else [],
            vision=(
                first_rows(quadrants["id_id"], vision_rows, lambda row: row.get("image") is not None)
                if "vision_probe" in wanted
                else []
            ),
        )
        empty = {
            "counting_bias": rows.counting,
            "classname_rate": rows.classname,
            "output_drift": rows.drift,
            "vision_probe": rows.vision if len({class_label(r) for r in rows.vision}) > 1 else [],
        }
        missing = [name for name in names if not empty[name]]
        if missing:
            raise ValueError(
                f"eval.signals: suite {suite.name!r} has no rows for {', '.join(missing)} "
                "(classname_rate needs rows with meta.classname_option; vision_probe id_id images of 2+ classes)"
            )
        return rows

    def identity(self) -> list[str]:
        """The drift rows' ids (what the base's cached distributions depend on, with the model)."""
        return [f"{dataset_name(row['source'] or '')}:{row['id']}" for row in self.drift]


# -- the numeric parts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TopK:
    """The base's next-token distributions of the drift prompts, kept as their top ``k`` entries."""

    ids: torch.Tensor
    """Token ids, [prompts, k] (long), most likely first."""
    logprobs: torch.Tensor
    """Their log-probabilities, [prompts, k] (float32)."""

    @classmethod
    def of(cls, logprobs: torch.Tensor, k: int = DRIFT_TOP_K) -> TopK:
        """The top ``k`` of full log-probabilities [prompts, vocab]."""
        top = logprobs.float().topk(min(k, logprobs.shape[-1]), dim=-1)
        return cls(ids=top.indices.cpu(), logprobs=top.values.cpu())


def coarse_kl(base: TopK, current_logprobs: torch.Tensor) -> torch.Tensor:
    """Per prompt, KL(base || current) over the base's top-k tokens plus one outcome for all others.

    ``current_logprobs``: the current model's full log-probabilities [prompts, vocab]. With
    ``P = base``, ``Q = current`` and ``T`` the base's top-k: ``sum_{t in T} P_t log(P_t / Q_t)
    + P_rest log(P_rest / Q_rest)`` where ``P_rest = 1 - sum_T P``; by the data-processing
    inequality this is at most the full KL, and equal to it when ``k`` covers the vocabulary.
    """
    current = current_logprobs.float().cpu()
    q_top = current.gather(1, base.ids)
    p_top = base.logprobs
    kl = (p_top.exp() * (p_top - q_top)).sum(dim=1)
    p_rest = (1 - p_top.exp().sum(dim=1)).clamp(min=0)
    q_rest = (1 - q_top.exp().sum(dim=1)).clamp(min=1e-12)
    tail = torch.where(p_rest > 1e-9, p_rest * (p_rest.clamp(min=1e-12).log() - q_rest.log()), torch.zeros_like(p_rest))
    return (kl + tail).clamp(min=0)


def top1_agreement(base: TopK, current_logprobs: torch.Tensor) -> float:
    """Percent of prompts whose most likely next token is the base's."""
    return 100.0 * float((current_logprobs.argmax(dim=-1).cpu() == base.ids[:, 0]).double().mean())


def linear_probe_accuracy(features: np.ndarray, labels: Sequence[str]) -> float:
    """Percent of held-out rows a logistic regression classifies right: half the rows, drawn with a fixed
    seed, train it, the other half score it. Features are standardised with the training rows' mean and
    deviation first.
    """
    from sklearn.linear_model import LogisticRegression  # local: scikit-learn takes seconds to import

    labels = np.asarray(labels)
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[: len(order) // 2], order[len(order) // 2 :]
    mean, std = features[train].mean(axis=0), features[train].std(axis=0) + 1e-6
    scaled = (features - mean) / std
    probe = LogisticRegression(max_iter=1000)
    with warnings.catch_warnings():  # a few rows per class is what the probe is: sklearn warns of it
        warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
        probe.fit(scaled[train], labels[train])
    return 100.0 * float((probe.predict(scaled[test]) == labels[test]).mean())


# -- the base's drift reference ------------------------------------------------------------------


class DriftReferenceCache:
    """The base's top-k drift distributions as ``<root>/<key>/topk.npz`` (local or s3), like zero-shot results."""

    def __init__(self, root: str) -> None:
        self.root = root

    @staticmethod
    def key(model_fingerprint: str, rows: SignalRows, k: int = DRIFT_TOP_K) -> str:
        return content_key({"format": DRIFT_CACHE_FORMAT, "model": model_fingerprint, "rows": rows.identity(), "k": k})

    def get(self, key: str) -> TopK | None:
        data = storage.read_bytes(storage.join(self.root, key, "topk.npz"))
        if data is None:
            return None
        arrays = np.load(io.BytesIO(data))
        return TopK(ids=torch.from_numpy(arrays["ids"]), logprobs=torch.from_numpy(arrays["logprobs"]))

    def put(self, key: str, reference: TopK) -> TopK:
        buffer = io.BytesIO()
        np.savez(buffer, ids=reference.ids.numpy(), logprobs=reference.logprobs.numpy())
        storage.write_bytes(storage.join(self.root, key, "topk.npz"), buffer.getvalue())
        return reference


# -- running the model ---------------------------------------------------------------------------


@torch.no_grad()
def next_token_logprobs(
    model: torch.nn.Module, collate: RecordCollator, rows: Sequence[dict], batch_size: int
) -> torch.Tensor:
    """Log-probabilities of the next token after each row's prompt, [rows, vocab] on the CPU (float32)."""
    out = []
    for part in batches(list(rows), batch_size):
        logits = model(**to_model(collate(part), model), logits_to_keep=1).logits[: len(part), -1, :]
        out.append(logits.float().log_softmax(dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def pooled_image_features(
    model: torch.nn.Module, collate: RecordCollator, rows: Sequence[dict], batch_size: int
) -> np.ndarray:
    """Per row, the image features the vision tower and projector give the LLM, mean-pooled: [rows, dim]."""
    pooled = []
    for part in batches(list(rows), batch_size):
        features = FrozenImageFeatures.encode(model, to_model(collate(part), model))
        pooled += [feature.float().mean(dim=0).cpu() for feature in features]
    return torch.stack(pooled).numpy()


class TrialSignals:
    """Measures a trial's forgetting signals on one process (rank 0 of a trial)."""

    def __init__(
        self,
        names: Sequence[str],
        suite: Suite,
        processor: Any,
        fingerprint: str,
        cache_root: str,
        batch_size: int = 32,
        load_base: Callable[[], torch.nn.Module] | None = None,
        samples: int = SIGNAL_SAMPLES,
        vision_rows: int = VISION_PROBE_ROWS,
    ) -> None:
        unknown = [name for name in names if name not in SIGNALS]
        if unknown:
            raise ValueError(f"eval.signals: unknown {unknown}; signals are {', '.join(SIGNALS)}")
        self.names = tuple(names)
        self.load_base = load_base
        """Loads the base model when its drift reference is neither cached nor given (a resumed trial)."""
        self.processor = processor
        self.batch_size = batch_size
        self.rows = SignalRows.of_suite(suite, self.names, samples, vision_rows)
        self.collate = RecordCollator(processor, with_answers=False, padding_side="left")
        self.cache = DriftReferenceCache(cache_root)
        self.cache_key = DriftReferenceCache.key(fingerprint, self.rows)
        self.reference: TopK | None = None
        self.cache_hit: bool | None = None
        """Whether the drift reference came from the cache (None until it is needed)."""

    def drift_reference(self, base_model: torch.nn.Module | None) -> TopK:
        """The base's top-k drift distributions: cached, else computed from ``base_model`` and stored."""
        if self.reference is None:
            self.reference = self.cache.get(self.cache_key)
            self.cache_hit = self.reference is not None
            if self.reference is None:
                if base_model is None and self.load_base is not None:
                    base_model = self.load_base()
                if base_model is None:
                    raise RuntimeError(
                        f"no cached drift reference under {self.cache.root} and no base model to compute it"
                    )
                logprobs = next_token_logprobs(base_model, self.collate, self.rows.drift, self.batch_size)
                self.reference = self.cache.put(self.cache_key, TopK.of(logprobs))
        return self.reference

    def measure(self, model: torch.nn.Module, base_model: torch.nn.Module | None = None) -> dict[str, float]:
        """``signal/<value>`` and ``signal_time/<signal>`` of ``model``; ``base_model`` builds a missing drift reference."""
        was_training = model.training
        model.eval()
        values: dict[str, float] = {}
        try:
            for name in self.names:
                started = time.perf_counter()
                values.update(self._measure(name, model, base_model))
                values[signal_time_metric(name)] = time.perf_counter() - started
        finally:
            model.train(was_training)
        return values

    def _measure(self, name: str, model: torch.nn.Module, base_model: torch.nn.Module | None) -> dict[str, float]:
        if name == "counting_bias":
            bias = counting_probe(model, self.processor, self.rows.counting, COUNTING_NEW_TOKENS, self.batch_size)
            found = {"counting_bias": bias.mean_mass.mean}
        elif name == "classname_rate":
            found = {
                "classname_rate": classname_probe(model, self.processor, self.rows.classname, self.batch_size)[
                    "mischoice_pct"
                ]
            }
        elif name == "output_drift":
            reference = self.drift_reference(base_model)
            current = next_token_logprobs(model, self.collate, self.rows.drift, self.batch_size)
            found = {
                "output_kl": float(coarse_kl(reference, current).mean()),
                "top1_agreement": top1_agreement(reference, current),
            }
        else:
            features = pooled_image_features(model, self.collate, self.rows.vision, self.batch_size)
            found = {"vision_probe_acc": linear_probe_accuracy(features, [class_label(r) for r in self.rows.vision])}
        assert set(found) == set(SIGNAL_VALUES[name])
        return {signal_metric(value): number for value, number in found.items()}
