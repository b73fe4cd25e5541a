"""The disk store of encoded rows: what one process encodes, the next loads, tensor for tensor."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recipes.data.collate import RecordCollator
from recipes.data.encoded_store import EncodedRowStore, collator_key, store_entries
from tests.tiny_models import mcq_row, tiny_qwen

STORE_BYTES = 2**30


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FORGETLESS_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def processor():
    return tiny_qwen()[1]


def rows() -> list[dict]:
    return [mcq_row(0), mcq_row(1, answer="B"), mcq_row(2, with_image=False), {**mcq_row(3), "answer": "D"}]


def entries(store: EncodedRowStore) -> list[Path]:
    return sorted(store_entries(store.directory))


@pytest.mark.parametrize("with_answers", [True, False])
def test_a_later_collator_loads_what_an_earlier_one_encoded(cache, processor, with_answers):
    padding = "right" if with_answers else "left"
    first = RecordCollator(
        processor, with_answers=with_answers, padding_side=padding, cache_bytes=0, store_bytes=STORE_BYTES
    )
    encoded = first(rows())
    assert (first.store.hits, first.store.misses, len(entries(first.store))) == (0, 4, 4)
    later = RecordCollator(
        processor, with_answers=with_answers, padding_side=padding, cache_bytes=0, store_bytes=STORE_BYTES
    )
    loaded = later(rows())
    assert (later.store.hits, later.store.misses) == (4, 0)  # nothing encoded again
    assert set(loaded) == set(encoded)
    for key, value in encoded.items():
        assert torch.equal(loaded[key], value), key
    assert first.store.directory == later.store.directory and first.store.directory.is_relative_to(cache)


def _other_template(processor):
    changed = copy.deepcopy(processor)
    changed.chat_template = processor.chat_template.replace("You are a helpful assistant.", "You are terse.")
    return changed


def _other_vocabulary(processor):
    changed = copy.deepcopy(processor)
    changed.tokenizer.add_tokens(["<added-word>"])
    return changed


@pytest.mark.parametrize(
    "change, with_answers",
    [
        (lambda p: p, False),  # evaluation encodings (no answer) are not training encodings
        (_other_template, True),
        (_other_vocabulary, True),
    ],
    ids=["answers", "chat-template", "tokenizer"],
)
def test_the_store_key_follows_what_an_encoding_depends_on(processor, change, with_answers):
    base = collator_key(processor, with_answers=True, code="c")
    assert collator_key(copy.deepcopy(processor), with_answers=True, code="c") == base  # same content: same store
    assert collator_key(change(processor), with_answers=with_answers, code="c") != base
    assert collator_key(processor, with_answers=True, code="other encoding code") != base


DAMAGES = {
    "not a tensor file": lambda data: b"not a tensor file",
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_an_unreadable_entry_is_encoded_again_and_replaced(cache, processor, damage):
    first = RecordCollator(processor, with_answers=True, cache_bytes=0, store_bytes=STORE_BYTES)
    expected = first(rows())
    broken = entries(first.store)[0]
    broken.write_bytes(damage(broken.read_bytes()))
    later = RecordCollator(processor, with_answers=True, cache_bytes=0, store_bytes=STORE_BYTES)
    assert torch.equal(later(rows())["labels"], expected["labels"])
    assert (later.store.hits, later.store.misses) == (3, 1)
    assert load_file(broken)  # written anew


def test_writes_stop_at_the_store_budget(cache, processor):
    unbounded = RecordCollator(processor, with_answers=True, cache_bytes=0, store_bytes=STORE_BYTES)
    expected = unbounded(rows()[:1])
    one_entry = entries(unbounded.store)[0].stat().st_size
    for path in entries(unbounded.store):
        path.unlink()
    bounded = RecordCollator(processor, with_answers=True, cache_bytes=0, store_bytes=one_entry * 3 // 2)
    batch = bounded(rows())
    assert len(entries(bounded.store)) == 2  # the second write reached the budget
    assert torch.equal(batch["input_ids"][:1, : expected["input_ids"].shape[1]], expected["input_ids"])
    reopened = EncodedRowStore(bounded.store.directory, max_bytes=one_entry * 3 // 2)
    assert reopened.bytes >= reopened.max_bytes  # a new process counts what is on disk


def test_no_store_unless_asked(cache, processor):
    collate = RecordCollator(processor, with_answers=True)
    collate(rows())
    assert collate.store is None and not (cache / "encoded-rows").exists()
    with pytest.raises(ValueError, match="store_bytes must be >= 0"):
        RecordCollator(processor, with_answers=True, store_bytes=-1)


def test_a_store_that_cannot_be_written_only_warns(cache, processor):
    (cache / "encoded-rows").write_text("a file where the store's folder would be")
    collate = RecordCollator(processor, with_answers=True, cache_bytes=0, store_bytes=STORE_BYTES)
    with pytest.warns(UserWarning, match="encoded-row store .*encoding without it"):
        batch = collate(rows())
    assert batch["input_ids"].shape[0] == 4 and collate.store.max_bytes == 0
