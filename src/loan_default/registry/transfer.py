"""Move a registered model version between servers as one checked file.

`export_version` writes a gzipped tar: `manifest.json` (format, source model and version, the
model card, the source run's metrics and parameters, and the sha256 and size of every file) and
`bundle/` (the model bundle the API loads: card, booster, ONNX graph). `import_bundle` refuses any
archive whose files differ from the manifest (extra, missing, or another sha256), loads the
bundle (which re-checks ONNX/XGBoost parity), scores it on this server's fixed test split, logs
it as a new run and registered version exactly as training does, and moves the serving alias only
through the training gate, or unconditionally when asked (`--promote`).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import mlflow

from loan_default.core.config import Settings
from loan_default.model.bundle import CARD_FILE, ModelBundle, ModelLoadError
from loan_default.registry.client import Registry, RegistryError

FORMAT = "loan-default-model-export/1"
MANIFEST = "manifest.json"
BUNDLE_DIR = "bundle"


class TransferError(RegistryError):
    """The archive cannot be exported or imported (named file, hash, format)."""


@dataclass(frozen=True)
class ImportResult:
    version: str
    promoted: bool
    reason: str
    source_version: str
    test_metrics: dict[str, float]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_version(registry: Registry, version: str, out: Path) -> dict[str, Any]:
    """Write version `version` of the registry's model to `out` (.tar.gz); returns the manifest."""
    try:
        mv = registry.client.get_model_version(registry.name, str(version))
    except mlflow.exceptions.MlflowException as exc:
        raise TransferError(f"model {registry.name!r} has no version {version}") from exc
    run = registry.client.get_run(mv.run_id) if mv.run_id else None
    with tempfile.TemporaryDirectory(prefix="loan-default-export-") as tmp:
        directory = registry.download_bundle_dir(str(version), Path(tmp))
        ModelBundle.load(
            directory, name=registry.name, version=str(version)
        )  # exports only what loads
        files = {
            str(PurePosixPath(BUNDLE_DIR, *p.relative_to(directory).parts)): p.read_bytes()
            for p in sorted(directory.rglob("*"))
            if p.is_file()
        }
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "model_name": registry.name,
        "source_version": str(version),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source_tags": dict(mv.tags or {}),
        "source_run": {
            "run_id": mv.run_id,
            "metrics": dict(run.data.metrics) if run else {},
            "params": dict(run.data.params) if run else {},
        },
        "model_card": json.loads(files[f"{BUNDLE_DIR}/{CARD_FILE}"]),
        "files": {name: {"sha256": _sha256(d), "bytes": len(d)} for name, d in files.items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for name, data in [(MANIFEST, json.dumps(manifest, indent=2).encode()), *files.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(datetime.now(UTC).timestamp())
            tar.addfile(info, io.BytesIO(data))
    partial.replace(out)
    return manifest


def read_archive(path: Path, dst: Path) -> dict[str, Any]:
    """Verify `path` against its manifest and extract the bundle under `dst`; returns the manifest.

    Nothing is extracted from an archive that fails a check, and only regular files with plain
    relative names under bundle/ are accepted.
    """
    if not path.is_file():
        raise TransferError(f"{path}: no such file")
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = tar.getmembers()
            contents: dict[str, bytes] = {}
            for m in members:
                entry = PurePosixPath(m.name)
                if not m.isfile() or entry.is_absolute() or ".." in entry.parts:
                    raise TransferError(f"{path}: unexpected entry {m.name!r}")
                handle = tar.extractfile(m)
                assert handle is not None  # nosec B101 - isfile() members always have a handle
                contents[str(entry)] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise TransferError(f"{path}: not a readable .tar.gz ({type(exc).__name__})") from exc
    if MANIFEST not in contents:
        raise TransferError(f"{path}: no {MANIFEST}")
    try:
        manifest: dict[str, Any] = json.loads(contents.pop(MANIFEST))
    except ValueError as exc:
        raise TransferError(f"{path}: {MANIFEST} is not JSON") from exc
    if manifest.get("format") != FORMAT:
        raise TransferError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    listed: dict[str, Any] = manifest.get("files") or {}
    if set(listed) != set(contents):
        extra, missing = sorted(set(contents) - set(listed)), sorted(set(listed) - set(contents))
        raise TransferError(
            f"{path}: files differ from the manifest (extra {extra}, missing {missing})"
        )
    for name, data in contents.items():
        if not name.startswith(f"{BUNDLE_DIR}/"):
            raise TransferError(f"{path}: {name} is outside {BUNDLE_DIR}/")
        if _sha256(data) != listed[name].get("sha256"):
            raise TransferError(f"{path}: sha256 of {name} does not match the manifest")
    for name, data in contents.items():
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return manifest


def import_bundle(settings: Settings, path: Path, *, promote: bool = False) -> ImportResult:
    """Register the archive's model as a new version here; promote through the gate or `promote`."""
    # Training's own helpers: the imported version is scored, logged and gated like a trained one.
    from loan_default.data.dataset import load_training_csv
    from loan_default.features import build_matrix
    from loan_default.training.gate import decide_promotion
    from loan_default.training.metrics import evaluate
    from loan_default.training.pipeline import log_bundle_model, split

    registry = Registry(settings)
    with tempfile.TemporaryDirectory(prefix="loan-default-import-") as tmp:
        manifest = read_archive(path, Path(tmp))
        directory = Path(tmp) / BUNDLE_DIR
        try:
            bundle = ModelBundle.load(directory, name=settings.model_name)
        except ModelLoadError as exc:
            raise TransferError(f"{path}: the bundle does not load: {exc}") from exc
        data = load_training_csv(settings.data_file)
        _, X_te_raw, _, y_te = split(data)
        X_te = build_matrix(X_te_raw)
        # measured through the serving kernel, as the gate measures a trained candidate
        metrics = evaluate(y_te, bundle.score(X_te).probability, threshold=bundle.card.threshold)
        source = manifest["source_run"]
        experiment_id = registry.ensure_experiment()
        with mlflow.start_run(experiment_id=experiment_id, run_name="import") as run:
            mlflow.set_tags(
                {
                    "imported_from_version": manifest["source_version"],
                    "imported_from_run": str(source.get("run_id")),
                    "data_sha256": bundle.card.data_sha256,
                    "git_commit": bundle.card.git_commit,
                }
            )
            mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
            mlflow.log_metrics({f"source_{k}": float(v) for k, v in source["metrics"].items()})
            mlflow.log_dict(manifest, "import_manifest.json")
            mlflow.log_dict(manifest["model_card"], "model_card.json")
            info = log_bundle_model(directory, data.X[:5])
        mv = mlflow.register_model(info.model_uri, settings.model_name)
    version = str(mv.version)
    client = registry.client
    for k, v in {
        "imported": "true",
        "source_version": manifest["source_version"],
        "source_run_id": str(source.get("run_id")),
        "run_id": run.info.run_id,
        "data_sha256": bundle.card.data_sha256,
    }.items():
        client.set_model_version_tag(settings.model_name, version, k, v)
    decision = decide_promotion(
        settings,
        registry,
        version,
        metrics,
        X_te,
        y_te,
        forced_reason="imported with --promote (gate not applied)" if promote else None,
    )
    return ImportResult(
        version, decision.promoted, decision.reason, manifest["source_version"], metrics
    )
