"""Hub models in the local Hugging Face cache: found there, or downloaded once per node.

    from recipes.models.hub_download import cached_snapshot, download_snapshot
    cached_snapshot("Qwen/Qwen2.5-VL-3B-Instruct")     # Path of the complete cached snapshot, or None
    download_snapshot("Qwen/Qwen2.5-VL-3B-Instruct")   # Path after downloading it (one process per node)

Every process that loads a Hub model (each Ray Train worker, through
``recipes.models.registry.load_model``) calls ``download_snapshot`` when the model is not cached.
A file lock per repository in the cache (``HF_HUB_CACHE/.locks/models--org--name.snapshot.lock``)
lets the first process download the snapshot while the others on the node wait, then find it
cached and make no request at all. An interrupted download is finished by the next process
(``snapshot_download`` only fetches missing files). Weights for other frameworks are left out
(``OTHER_FRAMEWORKS``). ``HF_HUB_OFFLINE=1`` (huggingface_hub's own
setting) forbids downloading; ``HF_ENDPOINT`` and ``HF_TOKEN`` choose the Hub and the credentials.
Nothing here loads torch or transformers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx2
from filelock import FileLock, Timeout
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.file_download import repo_folder_name

from recipes.common.redaction import redact, redact_uri

LOG = logging.getLogger("forgetless.models")
"""Where the download and the wait are logged (the workers log at INFO: ``jobs.worker``)."""

OTHER_FRAMEWORKS = ("*.h5", "*.msgpack", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "*.gguf", "*.mlmodel")
"""Weights for other frameworks (TensorFlow, Flax, Rust, ONNX, llama.cpp, Core ML) that some repositories
carry beside the PyTorch ones: transformers' PyTorch classes never read them, so they are not downloaded."""


class HubDownloadError(OSError):
    """A Hub model that could not be downloaded (unknown, gated, or the Hub unreachable)."""


def hub_cache() -> Path:
    """The Hugging Face Hub cache of this process (``HF_HUB_CACHE``, else ``HF_HOME/hub``)."""
    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids reaching the Hub."""
    return constants.is_offline_mode()


def cached_snapshot(repo_id: str) -> Path | None:
    """The complete snapshot of ``repo_id``'s main revision in the cache, or None; never reaches the Hub."""
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, ignore_patterns=list(OTHER_FRAMEWORKS)))
    except (LocalEntryNotFoundError, OSError, ValueError):  # absent, incomplete, or not a valid repo id
        return None


def lock_path(repo_id: str) -> Path:
    """The file lock that lets one process per node download ``repo_id``."""
    return hub_cache() / ".locks" / f"{repo_folder_name(repo_id=repo_id, repo_type='model')}.snapshot.lock"


def download_snapshot(repo_id: str) -> Path:
    """``repo_id``'s snapshot, downloaded into the cache by the first process of the node to get here.

    The others wait on the repository's lock and then return the cached snapshot.
    """
    path = lock_path(repo_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        LOG.info("waiting for another process downloading %s into %s", repo_id, hub_cache())
        lock.acquire()
    try:
        cached = cached_snapshot(repo_id)
        if cached is not None:
            return cached
        endpoint = redact_uri(constants.ENDPOINT)
        LOG.info("downloading %s from %s into %s", repo_id, endpoint, hub_cache())
        try:
            return Path(snapshot_download(repo_id, ignore_patterns=list(OTHER_FRAMEWORKS)))
        except GatedRepoError:
            raise HubDownloadError(
                f"{repo_id} is gated on {endpoint}: accept its terms on its page and set HF_TOKEN"
            ) from None
        except RepositoryNotFoundError:
            raise HubDownloadError(
                f"{repo_id} is not a model repository on {endpoint} (or it is private: set HF_TOKEN)"
            ) from None
        except (OSError, ValueError, httpx2.HTTPError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise HubDownloadError(f"downloading {repo_id} from {endpoint} failed: {redact(reason)}") from None
    finally:
        lock.release()
