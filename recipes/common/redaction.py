"""Credentials out of everything the product writes: URIs, messages, logs, MLflow, reports.

Every place that accepts a URI (grid fields, suite files, CLI flags) refuses one that carries
credentials (``credential_problem``); every place that writes text a user may paste somewhere
(MLflow params and artifacts, reports, error messages, logs) passes it through ``redact``:

    from recipes.common.redaction import credential_problem, redact, redact_uri
    credential_problem("train.dataset", "https://u:pw@host/x.jsonl")  # "train.dataset: contains credentials; ..."
    redact_uri("https://u:pw@host/x.jsonl?token=abc")                   # "https://***@host/x.jsonl?token=***"
    redact("cannot reach http://u:pw@host:5000")                        # "cannot reach http://***@host:5000"

``redact`` also hides the values of secret environment variables (names with PASSWORD, TOKEN,
SECRET, ...), so a library message that quotes one never reaches a log or an artifact.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
"""What a credential is replaced with."""

SECRET_QUERY_KEYS = ("token", "key", "secret", "password", "signature", "sig", "credential")
"""Query parameters that carry credentials in URIs (access tokens, signed-URL signatures)."""

SECRET_ENV_WORDS = ("PASSWORD", "TOKEN", "SECRET", "ACCESS_KEY", "API_KEY", "CREDENTIAL")
"""Environment variables whose names contain one of these hold secrets (their values are masked)."""

MIN_SECRET_LENGTH = 8
"""Shorter environment values are not masked (they would mask ordinary words)."""

URI = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
"""A URI inside free text (up to the next space or quote)."""

CREDENTIAL_HINT = (
    "remove them and use the environment instead (MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or "
    "MLFLOW_TRACKING_TOKEN for MLflow; AWS keys, a profile or an instance role for s3://; HF_TOKEN for the Hub)"
)


def _secret_query_key(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_QUERY_KEYS)


def has_credentials(uri: str) -> bool:
    """Whether ``uri`` carries a user, a password or a secret query parameter."""
    if "://" not in uri:
        return False
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "@" in uri.split("://", 1)[1].split("/", 1)[0]
    keys = [key for key, _ in parse_qsl(parts.query, keep_blank_values=True)]
    return "@" in parts.netloc or any(_secret_query_key(key) for key in keys)


def credential_problem(where: str, uri: str | None) -> str | None:
    """``<where>: contains credentials; ...`` for a URI with credentials in it, else None."""
    if not uri or not has_credentials(uri):
        return None
    return f"{where}: contains credentials; {CREDENTIAL_HINT}"


def redact_uri(uri: str) -> str:
    """``uri`` with its user info and secret query values replaced by ``***``."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = f"{MASK}@{authority.rsplit('@', 1)[1]}"
    rest = authority + slash + tail
    if "?" in rest:
        path, _, query = rest.partition("?")
        pairs = [pair.partition("=") for pair in query.split("&")]
        query = "&".join(f"{key}{eq}{MASK if eq and _secret_query_key(key) else value}" for key, eq, value in pairs)
        rest = f"{path}?{query}"
    return f"{scheme}://{rest}"


def secret_env_values() -> list[str]:
    """Values of this process's secret environment variables (long enough to mask safely)."""
    return sorted(
        {
            value
            for name, value in os.environ.items()
            if any(word in name.upper() for word in SECRET_ENV_WORDS) and len(value) >= MIN_SECRET_LENGTH
        },
        key=len,
        reverse=True,
    )


def redact(text: str) -> str:
    """``text`` with credentials in its URIs and secret environment values masked."""
    text = URI.sub(lambda match: redact_uri(match.group(0)), str(text))
    for value in secret_env_values():
        text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's message (arguments and traceback included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction() -> None:
    """Redact what every handler of the root logger writes (call once per process)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(message)s")  # what Python prints without any handler
    for handler in root.handlers:
        if not any(isinstance(item, RedactingFilter) for item in handler.filters):
            handler.addFilter(RedactingFilter())
