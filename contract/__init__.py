"""What a trial writes to MLflow and everything else reads: ``contract.layout``."""
