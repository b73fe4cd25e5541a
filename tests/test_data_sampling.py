"""Data fractions and the position-addressable training stream (mixing, oversampling, resume)."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from recipes.data.sampling import fraction_indices, take_fraction
from recipes.data.stream import MixSource, TrainingStream, block_slots, build_train_stream
from recipes.data.writers import write_records
from tests.data_fixtures import mcq_record


def mcq_table(name: str, rows: int) -> pa.Table:
    from recipes.data.schema import records_to_table

    return records_to_table([mcq_record(i, id=f"{name}-{i}", source=name) for i in range(rows)])


# -- fractions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "fraction", "size"),
    [(4000, 0.0025, 10), (4000, 0.025, 100), (4000, 0.25, 1000), (4000, 1.0, 4000), (3, 0.0025, 1), (7, 0.5, 4)],
)
def test_fraction_sizes(n, fraction, size):
    indices = fraction_indices(n, fraction, seed=0)
    assert len(indices) == size == len(set(indices.tolist()))
    assert indices.min() >= 0 and indices.max() < n and np.all(np.diff(indices) > 0)


@pytest.mark.parametrize("fraction", [0.0025, 0.025, 0.25])
def test_fractions_are_seeded_random_not_the_first_rows(fraction):
    first = fraction_indices(4000, fraction, seed=0)
    assert np.array_equal(first, fraction_indices(4000, fraction, seed=0))
    assert not np.array_equal(first, np.arange(len(first)))
    assert first.max() > 4000 * 0.5  # spread over the whole table
    assert not np.array_equal(first, fraction_indices(4000, fraction, seed=1))


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 1.5, float("nan"), "0.5", True, None])
def test_invalid_fractions(fraction):
    with pytest.raises(ValueError, match=r"data_fraction must be in \(0, 1\]"):
        fraction_indices(100, fraction, seed=0)


def test_take_fraction():
    table = mcq_table("t", 400)
    subset = take_fraction(table, 0.025, seed=3)
    assert subset.num_rows == 10
    assert subset.column("id").to_pylist() == [f"t-{i}" for i in fraction_indices(400, 0.025, seed=3)]
    assert take_fraction(table, 1.0, seed=3) is table


# -- block layout ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratios", "block", "slots"),
    [
        ([0.5, 0.5], 1000, [500, 500]),
        ([0.97, 0.03], 1000, [970, 30]),
        ([1 / 3, 1 / 3, 1 / 3], 1000, [334, 333, 333]),
        ([0.7, 0.0, 0.3], 10, [7, 0, 3]),
        ([0.15, 0.85], 10, [2, 8]),
    ],
)
def test_block_slots_largest_remainder(ratios, block, slots):
    assert block_slots(ratios, block) == slots


# -- training stream -------------------------------------------------------------------------------

TARGET, GENERAL = mcq_table("target", 700), mcq_table("general", 130)


@pytest.mark.parametrize("mix_ratio", [0.0, 0.03, 0.1, 0.25, 0.5, 0.7, 0.9, 0.97])
def test_realized_ratios(mix_ratio):
    stream = TrainingStream([("target", TARGET), ("general", GENERAL)], [1 - mix_ratio, mix_ratio], seed=0)
    whole_blocks = stream.realized_ratios(0, 10_000)
    assert whole_blocks["general"] == pytest.approx(mix_ratio, abs=1e-9)
    window = stream.realized_ratios(1234, 4321)
    assert window["general"] == pytest.approx(mix_ratio, abs=0.01)
    if mix_ratio == 0:
        assert window["general"] == 0.0 and all(r["source"] == "target" for r in stream.rows(0, 2000))


def test_positions_are_addressable_without_iterating():
    stream = TrainingStream([("target", TARGET), ("general", GENERAL)], [0.6, 0.4], seed=5)
    everything = [row["id"] for row in stream.rows(0, 5000)]
    for start, count in [(0, 1), (999, 2), (1000, 17), (3333, 1234), (4999, 1)]:
        fresh = TrainingStream([("target", TARGET), ("general", GENERAL)], [0.6, 0.4], seed=5)
        assert [row["id"] for row in fresh.rows(start, count)] == everything[start : start + count]


def test_every_row_once_before_any_repeats():
    stream = TrainingStream([("target", TARGET), ("general", GENERAL)], [0.5, 0.5], seed=1)
    ids = [row["id"] for row in stream.rows(0, 3000)]
    for name, table in (("target", TARGET), ("general", GENERAL)):
        sequence = [i for i in ids if i.startswith(name)]
        n = table.num_rows
        epochs = [sequence[k : k + n] for k in range(0, len(sequence) - n + 1, n)]
        assert all(sorted(epoch) == sorted(table.column("id").to_pylist()) for epoch in epochs)
    assert (
        Counter(i for i in ids if i.startswith("general")).most_common(1)[0][1] >= 11
    )  # 1500 samples of 130 rows: oversampled


def test_nothing_is_the_first_rows():
    stream = TrainingStream([("target", TARGET)], [1.0], seed=0)
    assert [row["id"] for row in stream.rows(0, 10)] != [f"target-{i}" for i in range(10)]


def test_records_have_the_contract_keys():
    (record,) = TrainingStream([("target", TARGET)], [1.0], seed=0).rows(7, 1)
    assert set(record) == {"id", "image", "question", "options", "answer", "source", "meta"}


def test_seed_changes_the_order_not_the_ratios():
    streams = [TrainingStream([("target", TARGET), ("general", GENERAL)], [0.5, 0.5], seed=s) for s in (0, 1)]
    assert [r["id"] for r in streams[0].rows(0, 50)] != [r["id"] for r in streams[1].rows(0, 50)]
    assert streams[0].realized_ratios(0, 2000) == streams[1].realized_ratios(0, 2000)


def test_samples_per_target_epoch():
    stream = TrainingStream([("target", TARGET), ("general", GENERAL)], [0.7, 0.3], seed=0)
    assert stream.samples_per_target_epoch == 1000
    ids = {row["id"] for row in stream.rows(0, 1000) if row["source"] == "target"}
    assert len(ids) == 700


STREAM_ERRORS = {
    "ratios do not sum to 1": (dict(ratios=[0.5, 0.4]), "ratios must sum to 1"),
    "negative ratio": (dict(ratios=[1.1, -0.1]), "ratio of source 'general' must be >= 0"),
    "ratio count": (dict(ratios=[1.0]), "got 2 sources but 1 ratios"),
    "ratio below one slot": (dict(ratios=[0.9999, 0.0001]), "ratio 0.0001 of source 'general' is below 1/block_size"),
    "negative seed": (dict(seed=-1), "seed must be an integer >= 0"),
}


@pytest.mark.parametrize(("change", "message"), STREAM_ERRORS.values(), ids=STREAM_ERRORS.keys())
def test_stream_errors(change, message):
    arguments = dict(sources=[("target", TARGET), ("general", GENERAL)], ratios=[0.5, 0.5], seed=0) | change
    with pytest.raises(ValueError, match=message):
        TrainingStream(**arguments)


def test_empty_source_with_a_share_is_an_error():
    with pytest.raises(ValueError, match="source 'general' has no rows"):
        TrainingStream([("target", TARGET), ("general", TARGET.slice(0, 0))], [0.5, 0.5], seed=0)


# -- from the recipe -------------------------------------------------------------------------------


@pytest.fixture
def dataset_files(tmp_path):
    target = write_records(mcq_table("target", 4000), tmp_path / "target.parquet")
    general = write_records(mcq_table("general", 300), tmp_path / "general.parquet")
    ocr = write_records(mcq_table("ocr", 50), tmp_path / "ocr.parquet")
    return target, general, ocr


def test_build_train_stream(dataset_files, caplog):
    target, general, ocr = dataset_files
    with caplog.at_level(logging.INFO, logger="forgetless.data"):
        stream = build_train_stream(target, 0.0025, [MixSource(general, 0.3), MixSource(ocr, 0.2)], seed=4)
    assert stream.names == ("target", "general", "ocr") and stream.ratios == pytest.approx((0.5, 0.3, 0.2))
    target_rows = stream.tables[0].take(range(stream.tables[0].num_rows))
    assert [row["id"] for row in target_rows] == [f"target-{i}" for i in fraction_indices(4000, 0.0025, seed=4)]
    realized = stream.realized_ratios(0, 10_000)
    assert realized == pytest.approx({"target": 0.5, "general": 0.3, "ocr": 0.2})
    assert "realized ratios target 0.5000, general 0.3000, ocr 0.2000" in caplog.text
    assert "target (data_fraction 0.0025: 10 rows)" in caplog.text


MIX_ERRORS = {
    "sum reaches 1": ([MixSource("general", 0.6), MixSource("ocr", 0.4)], "mix: ratios sum to 1; they must sum to < 1"),
    "negative ratio": (
        [{"dataset": "general", "ratio": -0.1}],
        r"mix\[0\]\.ratio: MixSource\.ratio of 'general' must be in \[0, 1\), got -0.1",
    ),
    "missing dataset": (
        [{"dataset": "general", "ratio": 0.1}, {"dataset": "", "ratio": 0.1}],
        r"mix\[1\]\.dataset: MixSource\.dataset must be",
    ),
    "unknown key": ([{"dataset": "general", "share": 0.1}], r"mix\[0\]: expected \{dataset, ratio\}"),
}


@pytest.mark.parametrize(("mix", "message"), MIX_ERRORS.values(), ids=MIX_ERRORS.keys())
def test_mix_errors_name_the_field(mix, message):
    with pytest.raises(ValueError, match=message):  # checked before any dataset is loaded
        build_train_stream("target", 1.0, mix, seed=0)


def test_mix_source_validates_itself():
    with pytest.raises(ValueError, match=r"MixSource\.ratio of 'x' must be in \[0, 1\), got 1.0"):
        MixSource("x", 1.0)


def test_mixing_a_dataset_twice_is_an_error(dataset_files):
    target, general, _ = dataset_files
    with pytest.raises(ValueError, match=r"mix\[1\]\.dataset: .*general\.parquet' is already in the training data"):
        build_train_stream(target, 1.0, [MixSource(str(general), 0.1), MixSource(str(general), 0.1)], seed=0)
