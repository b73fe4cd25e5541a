"""Where forgetless writes when nothing says otherwise: the embedded defaults of every command.

    from contract.defaults import DEFAULT_TRACKING_URI   # "sqlite:///mlflow.db"

Relative paths are relative to the working directory of the command (a trial's workers run there too).
"""

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
"""MLflow tracking store: a SQLite file in the working directory (``MLFLOW_TRACKING_URI`` overrides it)."""
DEFAULT_STORAGE = "./sweeps"
"""Root of the trials' checkpoints: a local directory or ``s3://bucket/prefix``."""
DEFAULT_REPORTS_DIR = "reports"
"""Folder of the reports, one subfolder per experiment (``reports/<experiment>/report.html``)."""
