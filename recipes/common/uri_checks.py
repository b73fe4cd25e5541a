"""What every field that takes a data URI checks: a known scheme and no credentials.

    from recipes.common.uri_checks import data_uri_problem
    data_uri_problem("train.dataset", "htp://host/x.jsonl")       # "train.dataset: unknown URI scheme 'htp://'; ..."
    data_uri_problem("train.dataset", "s3://b/x.parquet?token=1")  # "train.dataset: contains credentials; ..."
    data_uri_problem("train.dataset", "data/x.jsonl")              # None (a local path)

Grid fields, suite files and CLI flags all call it, so a URI is refused the same way wherever
it is written.
"""

from __future__ import annotations

from recipes.common.redaction import credential_problem

DATA_SCHEMES = ("file", "s3", "gs", "gcs", "az", "abfs", "abfss", "http", "https", "hf", "memory")
"""URI schemes datasets and suite files are read from (through fsspec)."""


def scheme_of(uri: str) -> str | None:
    """The scheme of ``uri`` in lower case (``s3``), or None for a local path."""
    return uri.split("://", 1)[0].lower() if "://" in uri else None


def data_uri_problem(where: str, uri: str | None) -> str | None:
    """``<where>: ...`` for a URI with an unknown scheme or with credentials, else None."""
    if not uri:
        return None
    scheme = scheme_of(uri)
    if scheme is not None and scheme not in DATA_SCHEMES:
        known = ", ".join(f"{name}://" for name in DATA_SCHEMES)
        return f"{where}: unknown URI scheme {scheme + '://'!r}; expected a local path or one of {known}"
    return credential_problem(where, uri)
