"""Evaluation plots logged to MLflow (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve


def write_plots(
    directory: Path,
    *,
    y: npt.NDArray[np.int64],
    p: npt.NDArray[np.float64],
    threshold: float,
    importance: dict[str, float],
) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = directory / name
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)

    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC (test)")
    save(fig, "roc_curve.png")

    prec, rec, _ = precision_recall_curve(y, p)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(rec, prec)
    ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall (test)")
    save(fig, "pr_curve.png")

    frac, mean_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(mean_pred, frac, "o-")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(
        xlabel="Mean predicted probability",
        ylabel="Observed default rate",
        title="Calibration (test)",
    )
    save(fig, "calibration_curve.png")

    cm = confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xlabel="Predicted",
        ylabel="Actual",
        title=f"Confusion @ {threshold:.3f}",
    )
    save(fig, "confusion_matrix.png")

    fig, ax = plt.subplots(figsize=(5, 3))
    names = list(importance)
    ax.barh(names, [importance[n] for n in names])
    ax.set(xlabel="Gain", title="Feature importance")
    save(fig, "feature_importance.png")
    return paths
