"""loan-default: calibrated probability-of-default scoring with an MLflow-governed model lifecycle."""

__version__ = "0.1.0"
