"""Where an image named in a data file may be read from: inside the dataset's folder.

A jsonl row (or an adapted benchmark row) may name its image by path. A relative path is read
relative to the dataset's folder (or ``--image-root``) and must stay inside it
(``../../etc/os-release`` is refused, and so is a symlink, or a path through a symlinked folder,
whose target lies outside: the check is on the resolved path); an absolute path, a URL or a path out of the folder is
read only when the user opts in (``--allow-external-images`` on ``python -m recipes.data``, or
``FORGETLESS_ALLOW_EXTERNAL_IMAGES=1`` for sweeps and trials), because a data file from
elsewhere must not make the product read (and train on, or upload) any file or URL it likes:

    image_location("img/cat.png", "/data/set")          # "/data/set/img/cat.png"
    image_location("../../etc/passwd", "/data/set")     # ValueError: ... leaves the dataset's folder ...
    image_location("/etc/passwd", "/data/set")          # ValueError: ... absolute path ... opt in with ...
"""

from __future__ import annotations

import os
import posixpath

from recipes.common.redaction import redact_uri

EXTERNAL_IMAGES_ENV = "FORGETLESS_ALLOW_EXTERNAL_IMAGES"
"""Set to 1 to let data files name images by absolute path or URL (sweeps and trials read it)."""

OPT_IN = f"pass --allow-external-images (or set {EXTERNAL_IMAGES_ENV}=1) if you trust the file"


def external_images_allowed() -> bool:
    """Whether the user opted in to images outside the dataset's folder."""
    return os.environ.get(EXTERNAL_IMAGES_ENV, "").strip().lower() in ("1", "true", "yes")


def _inside(path: str, folder: str, separator: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(separator) + separator)


def image_location(value: str, base_dir: str) -> str:
    """Where to read the image ``value`` names, relative to ``base_dir``; ValueError when it may not be read."""
    remote_base = "://" in base_dir
    if "://" in value or value.startswith(("/", "~")) or os.path.isabs(value):
        if not external_images_allowed():
            kind = "a URL" if "://" in value else "an absolute path"
            raise ValueError(f"image {redact_uri(value)!r} is {kind}, outside the dataset's folder; {OPT_IN}")
        return os.path.expanduser(value) if "://" not in value else value
    join, normalize = (posixpath.join, posixpath.normpath) if remote_base else (os.path.join, os.path.normpath)
    if remote_base:
        scheme, _, rest = base_dir.partition("://")
        folder = normalize(rest)
        location = normalize(join(folder, value))
        inside, resolved = _inside(location, folder, "/"), f"{scheme}://{location}"
    else:
        folder = normalize(os.path.abspath(base_dir))
        resolved = normalize(join(folder, value))
        inside = _inside(resolved, folder, os.sep)
        if inside and not _inside(os.path.realpath(resolved), os.path.realpath(folder), os.sep):
            if not external_images_allowed():  # symlinks followed: a link inside may point out
                raise ValueError(
                    f"image path {value!r} is a symlink (or goes through one) to a file outside the dataset's "
                    f"folder ({redact_uri(base_dir)}); {OPT_IN}"
                )
    if not inside and not external_images_allowed():
        raise ValueError(f"image path {value!r} leaves the dataset's folder ({redact_uri(base_dir)}); {OPT_IN}")
    return resolved
