"""loan-default: calibrated probability-of-default scoring, MLflow-governed lifecycle."""

__version__ = "0.1.0"
