"""One error boundary for every command: bad input is one line naming the file, exit status 2.

The places that read what a user gives (data, suite, model and checkpoint files, MLflow stores,
object storage) wrap the read in ``reading(what)``; the library errors malformed input causes
(JSON, YAML, Unicode, parquet, safetensors, pickle, botocore, nesting deeper than Python recurses)
become one ``InputError`` that names the file. Every command's ``main`` is wrapped in
``input_boundary``, which prints an ``InputError`` (redacted) and returns ``EXIT_BAD_INPUT``;
any other exception is a bug in the product and keeps its traceback:

    from recipes.common.input_errors import input_boundary, reading

    with reading(f"{path}: line {number}"):
        row = json.loads(raw)             # InputError "data/set.jsonl: line 3: invalid JSON: ..."

    @input_boundary
    def main(argv=None) -> int: ...
"""

from __future__ import annotations

import functools
import json
import pickle
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import yaml

from contract.exits import EXIT_BAD_INPUT
from recipes.common.redaction import redact

MAX_MESSAGE_CHARS = 400
"""Longest library message quoted in an error line (some quote whole files or payloads)."""


class InputError(ValueError):
    """A file, URI or value the user gave cannot be used; the message names it and says why (one line)."""


def _library_errors() -> tuple[type[BaseException], ...]:
    """Exception types that malformed input makes the readers' libraries raise (imported if installed)."""
    kinds: list[type[BaseException]] = [
        json.JSONDecodeError,
        UnicodeError,
        yaml.YAMLError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
    ]
    try:
        import pyarrow as pa

        kinds.append(pa.ArrowException)
    except ImportError:  # pragma: no cover - pyarrow is a core dependency
        pass
    try:
        from safetensors import SafetensorError

        kinds.append(SafetensorError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        kinds += [BotoCoreError, ClientError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(kinds)


LIBRARY_ERRORS = _library_errors()
"""What ``reading`` turns into ``InputError``; ``input_boundary`` also catches these as a last resort."""


def describe(error: BaseException) -> str:
    """One line saying what is wrong, from a library error (first line, bounded, credentials masked)."""
    if isinstance(error, RecursionError):
        return "nested too deep to read"
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start})"
    if isinstance(error, json.JSONDecodeError):
        return f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
    if isinstance(error, pickle.UnpicklingError):
        return "refused: holds Python objects that are not plain data (only tensors and containers are loaded)"
    if isinstance(error, (EOFError, zipfile.BadZipFile)):
        return "truncated or not the expected format"
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + " ..."
    return redact(text)


@contextmanager
def reading(what: str, *also: type[BaseException]) -> Iterator[None]:
    """Inside, a library error from malformed input (or one of ``also``) becomes ``InputError("<what>: ...")``.

    ``what`` names the file (and row) being read. A ``RecursionError`` counts as malformed input
    here: the code inside only parses what it is given.
    """
    try:
        yield
    except InputError:
        raise
    except (*LIBRARY_ERRORS, RecursionError, *also) as error:
        raise InputError(f"{redact(what)}: {describe(error)}") from None


def input_boundary(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command's ``main``: bad input is ``error: <one line>`` on stderr and ``EXIT_BAD_INPUT``.

    ``InputError`` carries its own message; the library errors of ``LIBRARY_ERRORS`` that reach
    here without one (a read not yet wrapped in ``reading``) are still one line. Everything else
    is a bug and propagates with its traceback.
    """

    @functools.wraps(main)
    def guarded(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except InputError as error:
            print(f"error: {redact(str(error))}", file=sys.stderr)
        except LIBRARY_ERRORS as error:
            print(f"error: {describe(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT

    return guarded
