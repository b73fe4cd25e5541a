"""The error the analysis raises for problems a user can fix (wrong experiment, missing metrics).

`python -m analysis.report` prints its message and exits with status 2.
"""


class AnalysisError(Exception):
    """A sweep cannot be analysed; the message says what is wrong and what exists instead."""
