"""The names that cross a process or storage boundary, defined once and imported everywhere.

``contract.layout``: MLflow run tags, metric names, params and artifact paths; ``contract.reports``:
the keys of a trial's reports to Ray Train and Tune; ``contract.exits``:
the commands' exit statuses; ``contract.defaults``: the embedded default URIs and folders. These
modules import nothing of the project (``tests/test_layering.py``), so every package can use them.
"""
