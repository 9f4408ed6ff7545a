"""Thin wrapper over the MLflow registry: aliases, promotion history, bundle download.

Stages are deprecated in MLflow; the serving pointer is an alias (default `production`). MLflow
keeps no history of where an alias pointed, so each promotion appends the version to a
registered-model tag; rollback pops it.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow
from loguru import logger
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from loan_default.core.config import Settings
from loan_default.model.bundle import CARD_FILE, ModelBundle, ModelLoadError

HISTORY_TAG = "alias_history.{alias}"
#: A URI scheme (s3://, mlflow-artifacts:/, file:...) as opposed to a local path.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def _file_uri_path(uri: str) -> Path:
    return Path(url2pathname(urlparse(uri).path)).resolve()


def _sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI (relative or, with 4 slashes, absolute)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///"))


#: An MLflow run id: 32 lowercase hex digits.
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def _layout_tail(path: Path) -> Path | None:
    """The part of an artifact path MLflow lays out below its artifact root, whatever the root:
    from `models/<model id>` (a logged model, MLflow 3) or from the run id (a run's artifacts),
    whichever comes last; None for a path in neither layout."""
    parts = path.parts
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1] == "models" and parts[i].startswith("m-"):
            return Path(*parts[i - 1 :])
        if _RUN_ID.fullmatch(parts[i]):
            return Path(*parts[i:])
    return None


class RegistryError(RuntimeError):
    """A registry operation cannot be done (unknown version, nothing to roll back to, ...)."""


@dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: list[str]
    tags: dict[str, str]
    run_id: str | None
    created: int


def configure_tracking(settings: Settings) -> None:
    """Point MLflow at the configured store; create `mlflow/` for the embedded SQLite default."""
    uri = settings.mlflow_tracking_uri
    db = _sqlite_file(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


class Registry:
    def __init__(self, settings: Settings) -> None:
        configure_tracking(settings)
        self.settings = settings
        self.name = settings.model_name
        self.alias = settings.model_alias
        self.client = MlflowClient(
            tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
        )

    # --- experiment ----------------------------------------------------------------------
    def ensure_experiment(self) -> str:
        """The experiment new runs go to (training, `model import`), created on first use with
        the configured artifact root; a moved SQLite store's is pointed at the new root first
        (`_follow_moved_store`)."""
        exp = self.client.get_experiment_by_name(self.settings.mlflow_experiment)
        if exp is not None:
            self._follow_moved_store(str(exp.experiment_id), exp.artifact_location)
            return str(exp.experiment_id)
        root_setting = self.settings.mlflow_artifact_root.strip()
        location: str | None
        if not root_setting:
            location = None  # the tracking server's own default artifact root
        elif _URI.match(root_setting):
            location = root_setting  # a URI (s3://, mlflow-artifacts:/, file:...): as given
        else:
            root = Path(root_setting).resolve()
            root.mkdir(parents=True, exist_ok=True)
            location = root.as_uri()
        return str(self.client.create_experiment(self.settings.mlflow_experiment, location))

    def _follow_moved_store(self, experiment_id: str, location: str) -> None:
        """Point the experiment of a copied SQLite store at the configured artifact root.

        MLflow writes a new run's artifacts under its experiment's recorded location, an absolute
        path. In a copy of `mlflow/` (another directory, another server) that is still the
        original's: a retraining there would put the new version's files into the tree it was
        copied from, and the copy would silently depend on that tree. MLflow has no call to change
        an experiment's location, so the row is updated in the store's own file (SQLite only: a
        tracking server owns its artifact locations). Earlier versions keep their recorded paths
        and are read from the copy (`_relocated`).
        """
        db = _sqlite_file(self.settings.mlflow_tracking_uri)
        root = self.local_artifact_root()
        if root is None or db is None or not location.startswith("file:"):
            return
        if _file_uri_path(location) == root:
            return
        root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(db)
        try:
            with con:
                con.execute(
                    "update experiments set artifact_location = ? where experiment_id = ?",
                    (root.as_uri(), int(experiment_id)),
                )
        finally:
            con.close()
        logger.warning(
            "experiment {} recorded its artifacts under {} (a moved or copied store): new runs "
            "now write under MLFLOW_ARTIFACT_ROOT {}",
            experiment_id,
            _file_uri_path(location),
            root,
        )

    # --- versions and aliases ------------------------------------------------------------
    def alias_version(self, alias: str | None = None) -> str | None:
        """Version the alias points to, or None if there is none (or no registered model)."""
        try:
            mv = self.client.get_model_version_by_alias(self.name, alias or self.alias)
        except MlflowException as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise
        return str(mv.version)

    def list_versions(self) -> list[VersionInfo]:
        try:
            versions = self.client.search_model_versions(f"name='{self.name}'")
        except MlflowException:
            return []
        out = [
            VersionInfo(
                version=str(v.version),
                aliases=list(getattr(v, "aliases", []) or []),
                tags=dict(v.tags or {}),
                run_id=v.run_id,
                created=int(v.creation_timestamp or 0),
            )
            for v in versions
        ]
        return sorted(out, key=lambda v: int(v.version))

    def _history(self) -> list[str]:
        try:
            rm = self.client.get_registered_model(self.name)
        except MlflowException:
            return []
        raw = (rm.tags or {}).get(HISTORY_TAG.format(alias=self.alias), "")
        return [v for v in raw.split(",") if v]

    def _set_history(self, history: list[str]) -> None:
        self.client.set_registered_model_tag(
            self.name, HISTORY_TAG.format(alias=self.alias), ",".join(history[-50:])
        )

    def promote(self, version: str, *, reason: str = "manual promotion") -> None:
        """Point the serving alias at `version` and record it in the promotion history."""
        try:
            self.client.get_model_version(self.name, str(version))
        except MlflowException as exc:
            raise RegistryError(f"model {self.name!r} has no version {version}") from exc
        self.client.set_registered_model_alias(self.name, self.alias, str(version))
        self.client.set_model_version_tag(self.name, str(version), "promoted", "true")
        self.client.set_model_version_tag(self.name, str(version), "promotion_reason", reason)
        history = self._history()
        if not history or history[-1] != str(version):
            history.append(str(version))
        self._set_history(history)

    def rollback(self) -> tuple[str, str]:
        """Move the alias back to the previous production version; returns (from, to)."""
        current = self.alias_version()
        history = self._history()
        if current is not None and history and history[-1] == current:
            history.pop()
        while history and history[-1] == current:
            history.pop()
        if current is None or not history:
            raise RegistryError(
                f"no earlier {self.alias!r} version of {self.name!r} to roll back to"
            )
        target = history[-1]
        self.client.set_registered_model_alias(self.name, self.alias, target)
        self.client.set_model_version_tag(self.name, current, "rolled_back", "true")
        self._set_history(history)
        return current, target

    # --- bundles -------------------------------------------------------------------------
    def download_bundle_dir(self, version: str, dst: Path | None = None) -> Path:
        dst = dst or Path(tempfile.mkdtemp(prefix=f"loan-default-v{version}-"))
        # Resolved through this registry's own client, not `models:/` (which reads the
        # process-global registry URI), so two registries in one process never mix.
        try:
            source = self.client.get_model_version_download_uri(self.name, str(version))
        except MlflowException as exc:
            raise ModelLoadError(f"model {self.name!r} has no version {version}") from exc
        source = self._relocated(source)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source,
                dst_path=str(dst),
                tracking_uri=self.settings.mlflow_tracking_uri,
            )
        )
        cards = sorted(local.rglob(CARD_FILE))
        if not cards:
            raise ModelLoadError(f"version {version} of {self.name!r} has no {CARD_FILE}")
        return cards[0].parent

    def local_artifact_root(self) -> Path | None:
        """The configured artifact root when it is a local directory (not a URI, not empty)."""
        root = self.settings.mlflow_artifact_root.strip()
        if not root or _URI.match(root):
            return None
        return Path(root).resolve()

    def _relocated(self, source: str) -> str:
        """`source` re-resolved under this store's artifact root when the store has been moved.

        A SQLite store records absolute `file://` artifact locations. After `mlflow/` is copied
        elsewhere those paths are gone, or worse, still point into the old copy; the artifacts
        are under the configured root, at MLflow's layout below the root it was recorded under
        (`_layout_tail`). So a local source outside the configured root is read from there
        instead, when it exists there (a root changed in the settings, files not moved: as
        recorded).
        """
        if not source.startswith("file:"):
            return source
        new_root = self.local_artifact_root()
        if new_root is None:
            return source
        path = _file_uri_path(source)
        tail = None if path.is_relative_to(new_root) else _layout_tail(path)
        if tail is None:
            return source
        moved = new_root / tail
        return moved.as_uri() if moved.exists() else source

    def load_bundle(self, version: str, *, alias: str | None = None) -> ModelBundle:
        """Download, load fully into memory, and delete the download (nothing left on disk)."""
        with tempfile.TemporaryDirectory(prefix=f"loan-default-v{version}-") as tmp:
            directory = self.download_bundle_dir(version, Path(tmp))
            return ModelBundle.load(directory, name=self.name, version=version, alias=alias)

    def load_alias(self) -> ModelBundle | None:
        version = self.alias_version()
        if version is None:
            return None
        return self.load_bundle(version, alias=self.alias)

    def version_tags(self, version: str) -> dict[str, Any]:
        return dict(self.client.get_model_version(self.name, version).tags or {})
