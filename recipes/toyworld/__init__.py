"""The toy world: a deterministic synthetic multimodal world at CPU scale.

    python -m recipes.data toy --out DIR      # write its datasets and eval suite into DIR
    from recipes.data import load_dataset; load_dataset("toy-imagenet-vqa")   # generated on first use

Pictures (``images``) and question types (``tasks``) make the MCQ datasets of the world
(``world``) and its free-form ones (``freeform``); ``datasets`` builds them into the cache on
first use and is the dataset provider through which the data registry resolves the toy names
(``toy-imagenet-vqa``, the ``toy`` suite, the ``toy-cl-*`` continual domains). The toy world
writes the data contract (``recipes.data``); the contract never imports it. The toy model
pre-trained on it is ``recipes.toyworld.model`` and ``recipes.toyworld.base``, and its command
line ``python -m recipes.toyworld pretrain`` (``recipes/toyworld/__main__.py``).
"""
