"""What every package of forgetless may use: storage, cache, URIs, redaction, YAML, tables, reachability,
progress bars.

These modules import only ``contract`` and third-party libraries, never the model parts, data or
trials of ``recipes``, so ``analysis``, ``jobs`` and ``orchestrator`` can share them without
depending on the rest of ``recipes`` (``tests/test_layering.py`` holds them to it).
"""
