"""The row contract and feature engineering, defined once for training, the API and the worker."""

from loan_default.features.contract import (
    BOUND_BY_NAME,
    BOUNDS,
    ENGINEERED_FEATURES,
    FEATURE_NAMES,
    MAX_AMOUNT,
    MIN_ANNUAL_SALARY,
    RAW_COLUMNS,
    RAW_FEATURES,
    RISK_LABELS,
    TARGET_COLUMN,
    Bound,
    band_edges,
    risk_codes,
    risk_labels,
)
from loan_default.features.engineering import build_matrix, feature_row, saving_rate

__all__ = [
    "BOUNDS",
    "BOUND_BY_NAME",
    "ENGINEERED_FEATURES",
    "FEATURE_NAMES",
    "MAX_AMOUNT",
    "MIN_ANNUAL_SALARY",
    "RAW_COLUMNS",
    "RAW_FEATURES",
    "RISK_LABELS",
    "TARGET_COLUMN",
    "Bound",
    "band_edges",
    "build_matrix",
    "feature_row",
    "risk_codes",
    "risk_labels",
    "saving_rate",
]
