"""MLflow pyfunc flavour over the model bundle, so `mlflow models serve` and `spark_udf` work.

The pyfunc is logged "from code" (this module's sibling `pyfunc_model.py`), so MLflow stores no
pickled Python object; its artifacts are the same booster/ONNX/card files the API loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from loan_default.features import RAW_FEATURES
from loan_default.model.bundle import ModelBundle


class LoanDefaultPyfunc(PythonModel):
    """Input: DataFrame with employed, bank_balance, annual_salary. Output: scored columns."""

    bundle: ModelBundle | None = None

    def load_context(self, context: Any) -> None:
        self.bundle = ModelBundle.load(Path(context.artifacts["bundle"]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if self.bundle is None:
            self.load_context(context)
        assert self.bundle is not None  # nosec B101 - type narrowing for mypy on an invariant, not input validation
        frame = pd.DataFrame(model_input)
        missing = [c for c in RAW_FEATURES if c not in frame.columns]
        if missing:
            raise ValueError(f"missing input columns: {missing}")
        s = self.bundle.score_raw(frame[list(RAW_FEATURES)].to_numpy(dtype=np.float64))
        return pd.DataFrame(
            {
                "probability": s.probability,
                "prediction": s.prediction,
                "default_risk": s.default_risk,
            }
        )
