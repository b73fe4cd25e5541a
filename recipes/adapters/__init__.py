"""Adapters: public benchmark and conversation formats, and class-labelled image folders, turned into the data contract.

    python -m recipes.data adapt FORMAT --input PATH --out FILE
    python -m recipes.data imagenet-vqa --images DIR --clip PATH --out FILE

``formats`` is the way in (``adapt``, ``adapt_file``, the list of formats); ``rows`` reads the
source files; ``mcq`` and ``freeform`` convert the rows of each format; ``class_folder`` and
``imagenet_vqa`` build classification questions from image folders. The adapters write the
data contract (``recipes.data``); the contract never imports them.
"""
