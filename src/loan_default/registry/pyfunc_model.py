"""Entry file for MLflow "models from code"; MLflow executes it when the pyfunc is loaded."""

import mlflow.models

from loan_default.registry.pyfunc import LoanDefaultPyfunc

mlflow.models.set_model(LoanDefaultPyfunc())
