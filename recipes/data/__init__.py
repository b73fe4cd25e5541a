"""The data contract of forgetless: MCQ and free-form records, reading and writing them, dataset
names, reading rows on demand, fractions, mixing, suites, continual task sequences, collation. Public formats become
records through ``recipes.adapters``; the toy world is ``recipes.toyworld``, which registered names
reach through the registry's dataset providers. The contract imports neither; its command line
(``python -m recipes.data``) brings the three together.

    from recipes.data import load_dataset, load_suite, build_train_stream, MixSource
    stream = build_train_stream("toy-imagenet-vqa", 1.0, [MixSource("toy-general", 0.5)], seed=0)
    suite = load_suite("toy")

Command line: ``python -m recipes.data --help`` (toy world, ImageNet-VQA, adapters, inspect).
"""

from recipes.data.prompts import mcq_instruction, mcq_prompt
from recipes.data.readers import read_records, read_records_report, read_records_sample, skipped_row_count
from recipes.data.registry import (
    DatasetNotFoundError,
    dataset_name,
    load_dataset,
    registered_datasets,
    resolve_dataset,
)
from recipes.data.row_source import RowSource, open_rows
from recipes.data.sampling import fraction_indices, take_fraction
from recipes.data.schema import (
    LETTERS,
    MCQ_COLUMNS,
    MCQ_SCHEMA,
    RECORD_SCHEMA,
    RecordFormatError,
    answer_index,
    option_letter,
    row_history,
    row_images,
    row_kind,
)
from recipes.data.stream import MixSource, TrainingStream, build_train_stream
from recipes.data.suites import QUADRANTS, Suite, SuiteError, load_suite
from recipes.data.writers import write_records

__all__ = [
    "LETTERS",
    "MCQ_COLUMNS",
    "mcq_instruction",
    "MCQ_SCHEMA",
    "QUADRANTS",
    "RECORD_SCHEMA",
    "DatasetNotFoundError",
    "RecordFormatError",
    "MixSource",
    "RowSource",
    "Suite",
    "SuiteError",
    "TrainingStream",
    "answer_index",
    "build_train_stream",
    "dataset_name",
    "fraction_indices",
    "load_dataset",
    "load_suite",
    "open_rows",
    "mcq_prompt",
    "option_letter",
    "read_records",
    "read_records_report",
    "read_records_sample",
    "registered_datasets",
    "resolve_dataset",
    "row_history",
    "row_images",
    "row_kind",
    "skipped_row_count",
    "take_fraction",
    "write_records",
]
