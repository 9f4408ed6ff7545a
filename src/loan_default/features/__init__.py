"""Feature engineering, defined once for training, the API and the batch worker."""

from loan_default.features.engineering import (
    ENGINEERED_FEATURES,
    FEATURE_NAMES,
    MIN_ANNUAL_SALARY,
    RAW_COLUMNS,
    RAW_FEATURES,
    TARGET_COLUMN,
    build_matrix,
    feature_row,
    saving_rate,
)

__all__ = [
    "ENGINEERED_FEATURES",
    "FEATURE_NAMES",
    "MIN_ANNUAL_SALARY",
    "RAW_COLUMNS",
    "RAW_FEATURES",
    "TARGET_COLUMN",
    "build_matrix",
    "feature_row",
    "saving_rate",
]
