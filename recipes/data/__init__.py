"""Datasets of forgetless: the data contract (MCQ and free-form records), builders, adapters,
fractions, mixing, suites, toy world.

    from recipes.data import load_dataset, load_suite, build_train_stream, MixSource
    stream = build_train_stream("toy-imagenet-vqa", 1.0, [MixSource("toy-general", 0.5)], seed=0)
    suite = load_suite("toy")

Command line: ``python -m recipes.data --help`` (toy world, ImageNet-VQA, adapters, inspect).
"""

from recipes.data.prompts import mcq_instruction, mcq_prompt
from recipes.data.registry import (
    REGISTERED_DATASETS,
    DatasetNotFoundError,
    dataset_name,
    load_dataset,
    resolve_dataset,
    toy_world_key,
)
from recipes.data.sampling import fraction_indices, take_fraction
from recipes.data.schema import (
    LETTERS,
    MCQ_COLUMNS,
    MCQ_SCHEMA,
    RECORD_SCHEMA,
    MCQFormatError,
    answer_index,
    option_letter,
    read_mcq,
    read_mcq_report,
    row_history,
    row_images,
    row_kind,
    skipped_row_count,
    write_mcq,
)
from recipes.data.stream import MixSource, TrainingStream, build_train_stream
from recipes.data.suites import QUADRANTS, Suite, SuiteError, load_suite

__all__ = [
    "LETTERS",
    "MCQ_COLUMNS",
    "mcq_instruction",
    "MCQ_SCHEMA",
    "QUADRANTS",
    "RECORD_SCHEMA",
    "REGISTERED_DATASETS",
    "DatasetNotFoundError",
    "MCQFormatError",
    "MixSource",
    "Suite",
    "SuiteError",
    "TrainingStream",
    "answer_index",
    "build_train_stream",
    "dataset_name",
    "fraction_indices",
    "load_dataset",
    "load_suite",
    "mcq_prompt",
    "option_letter",
    "read_mcq",
    "read_mcq_report",
    "resolve_dataset",
    "row_history",
    "row_images",
    "row_kind",
    "skipped_row_count",
    "take_fraction",
    "toy_world_key",
    "write_mcq",
]
