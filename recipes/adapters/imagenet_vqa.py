"""python -m recipes.data imagenet-vqa --images DIR --clip PATH --out FILE [--seed N]

ImageNet-VQA (paper §2.1, appendix B.1): every image of a class-labelled folder becomes the
question "What is the class of this image?" with four options, the true class and three
distractors sampled from the five wrong classes whose CLIP text embeddings of
"a photo of {class}" are most similar to the true class's (similarity matrix computed once;
everything deterministic given the seed; answer letters balanced).

    from recipes.adapters.imagenet_vqa import build_imagenet_vqa
    build_imagenet_vqa("/data/imagenet/train", "/models/clip-vit-base-patch32", "imagenet-vqa.parquet",
                       names_file="/data/imagenet/LOC_synset_mapping.txt")

The folder layout, names files and the class-list + files-list alternative are described in
``recipes.adapters.class_folder``.
"""

from __future__ import annotations

import os

from recipes.adapters.class_folder import ClassFolder, build_class_mcq
from recipes.data.prompts import CLASS_QUESTION


def build_imagenet_vqa(
    images: str | os.PathLike,
    clip_path: str,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    names_file: str | os.PathLike | None = None,
    classes_file: str | os.PathLike | None = None,
    files_file: str | os.PathLike | None = None,
    source: str | None = None,
    overwrite: bool = False,
) -> int:
    """Write ImageNet-VQA questions for the images under ``images``; returns the row count.

    With ``classes_file`` and ``files_file`` the classes and files come from those lists
    (paths relative to ``images``) instead of scanning the folder.
    """
    if (classes_file is None) != (files_file is None):
        raise ValueError("classes_file and files_file go together (a class list and a files list)")
    if classes_file is not None:
        folder = ClassFolder.from_lists(images, classes_file, files_file, names_file=names_file)
    else:
        folder = ClassFolder.scan(images, names_file=names_file)
    return build_class_mcq(
        folder,
        out,
        question=CLASS_QUESTION,
        clip_path=clip_path,
        seed=seed,
        source=source,
        num_options=4,
        pool_size=5,
        overwrite=overwrite,
    )
