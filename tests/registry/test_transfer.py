"""Moving a model between servers: export/import archives, and a copied `mlflow/` store.

Real MLflow SQLite stores in temporary directories; the served model is loaded through the
registry exactly as the API loads it, and the CLI is called in-process.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import tarfile
from pathlib import Path

import pytest

from loan_default.cli import main
from loan_default.model.bundle import ModelLoadError
from loan_default.registry.client import Registry
from loan_default.registry.transfer import (
    MANIFEST,
    TransferError,
    export_version,
    import_bundle,
    read_archive,
)
from tests.conftest import copy_store, make_settings

pytestmark = pytest.mark.integration

APPLICANT = (1.0, 12000.0, 380000.0)


@pytest.fixture(scope="module")
def archive(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "bundle.tar.gz"
    export_version(Registry(make_settings(trained_store)), "1", out)
    return out


def _rewrite(archive: Path, dst: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of `archive` with members replaced (bytes), removed (None) or added."""
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    for name, data in change.items():
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dst


def test_archive_manifest_lists_every_file_with_its_sha256(archive: Path, tmp_path: Path) -> None:
    manifest = read_archive(archive, tmp_path)
    assert manifest["model_name"] == "loan-default"
    assert manifest["source_version"] == "1"
    assert manifest["model_card"]["threshold"] > 0
    assert manifest["source_run"]["metrics"]["test_roc_auc"] > 0.9
    assert set(manifest["files"]) == {
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
    }
    assert "bundle/model_card.json" in manifest["files"]
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())


def test_import_into_a_fresh_store_elsewhere_then_serve(archive: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "other-server")
    result = import_bundle(settings, archive)
    assert result.version == "1"
    assert result.source_version == "1"
    assert result.promoted, result.reason  # the gate: passes the minimums, nothing in production
    assert "no 'production' version yet" in result.reason
    registry = Registry(settings)
    assert registry.alias_version() == "1"
    served = registry.load_alias()
    assert served is not None
    tags = registry.version_tags("1")
    assert tags["imported"] == "true"
    assert tags["source_version"] == "1"
    with tarfile.open(archive, "r:gz") as tar:
        card = json.loads(tar.extractfile("bundle/model_card.json").read())  # type: ignore[union-attr]
    assert served.card.threshold == card["threshold"]
    assert 0.0 <= served.score_one(*APPLICANT).probability <= 1.0


def test_second_import_goes_through_the_gate_unless_promote(archive: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "server")
    assert import_bundle(settings, archive).promoted
    again = import_bundle(settings, archive)
    assert again.version == "2"
    assert not again.promoted  # the same model is not better than production
    assert "not better than production" in again.reason
    assert Registry(settings).alias_version() == "1"
    forced = import_bundle(settings, archive, promote=True)
    assert forced.promoted
    assert Registry(settings).alias_version() == "3"
    assert Registry(settings).version_tags("3")["gate_reason"].startswith("imported with --promote")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bundle/model_card.json": b"{}"}, "sha256 of bundle/model_card.json"),
        ({"bundle/extra.bin": b"x"}, "files differ from the manifest"),
        ({"bundle/model_card.json": None}, "files differ from the manifest"),
        ({MANIFEST: None}, "no manifest.json"),
        ({MANIFEST: b'{"format": "other"}'}, "format 'other'"),
    ],
)
def test_import_refuses_a_tampered_archive_and_registers_nothing(
    archive: Path, tmp_path: Path, change: dict[str, bytes | None], message: str
) -> None:
    bad = _rewrite(archive, tmp_path / "bad.tar.gz", change)
    settings = make_settings(tmp_path / "server")
    with pytest.raises(TransferError, match=message):
        import_bundle(settings, bad)
    assert Registry(settings).list_versions() == []


def test_import_refuses_path_traversal(archive: Path, tmp_path: Path) -> None:
    bad = _rewrite(archive, tmp_path / "bad.tar.gz", {"../evil": b"x"})
    with pytest.raises(TransferError, match="unexpected entry"):
        read_archive(bad, tmp_path / "out")
    assert not (tmp_path / "evil").exists()


def test_cli_export_and_import(
    trained_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = make_settings(trained_store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", src.mlflow_tracking_uri)
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", src.mlflow_artifact_root)
    monkeypatch.setenv("API_KEYS", "k" * 20)
    monkeypatch.setenv("DATA_PATH", src.data_path)
    out = tmp_path / "v1.tar.gz"
    assert main(["model", "export", "1", "--out", str(out)]) == 0
    assert "exported loan-default v1" in capsys.readouterr().out
    assert main(["model", "export", "99", "--out", str(tmp_path / "x.tar.gz")]) == 1
    assert "has no version 99" in capsys.readouterr().err
    dst = make_settings(tmp_path / "dst")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dst.mlflow_tracking_uri)
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", dst.mlflow_artifact_root)
    assert main(["model", "import", str(out), "--promote"]) == 0
    printed = capsys.readouterr().out
    assert "imported v1 as loan-default v1 (PROMOTED to @production)" in printed
    assert main(["model", "import", str(tmp_path / "missing.tar.gz")]) == 1
    assert "missing.tar.gz: no such file" in capsys.readouterr().err


def test_a_copied_store_serves_from_its_new_place(trained_store: Path, tmp_path: Path) -> None:
    """`cp -r mlflow/` to another directory: the copy serves, from the copy's own artifacts."""
    copy = tmp_path / "elsewhere" / "mlflow"
    shutil.copytree(trained_store, copy)
    # The database still records the old absolute paths (nothing rewritten).
    con = sqlite3.connect(copy / "mlflow.db")
    (location,) = con.execute(
        "select artifact_location from experiments where name='loan-default'"
    ).fetchone()
    con.close()
    assert str(trained_store) in location
    settings = make_settings(copy)
    registry = Registry(settings)
    directory = registry.download_bundle_dir("1", tmp_path / "dl")
    assert (directory / "model_card.json").is_file()
    served = registry.load_alias()
    assert served is not None
    assert served.version == "1"
    # Proof it reads the copy, not the old place (which still exists here): corrupt the copy's
    # bundle and the load fails, naming the problem.
    (card,) = [
        p for p in (copy / "artifacts").rglob("model_card.json") if p.parent.name == "bundle"
    ]
    card.write_text("{}")
    with pytest.raises(ModelLoadError, match="missing or corrupt"):
        registry.load_bundle("1")


def test_retraining_in_a_copied_store_writes_only_into_the_copy(
    trained_store: Path, tmp_path: Path, quick_training: int
) -> None:
    """`cp -r mlflow/` elsewhere, then retrain there: the new version's artifacts land under the
    copy's artifact root, not in the tree it was copied from (which the copy would then silently
    depend on), and the copy serves the new version after the original is gone."""
    from loan_default.training.pipeline import train

    original = copy_store(trained_store, tmp_path / "original")  # a store trained in place
    copy = tmp_path / "elsewhere" / "mlflow"
    shutil.copytree(original, copy)
    before = sorted(p.relative_to(original) for p in original.rglob("*") if p.is_file())
    settings = make_settings(copy)
    report = train(settings)
    assert report["model_version"] == "2"
    after = sorted(p.relative_to(original) for p in original.rglob("*") if p.is_file())
    assert after == before, "retraining in the copy wrote into the original"
    shutil.rmtree(original)
    cards = [p for p in (copy / "artifacts").rglob("model_card.json") if p.parent.name == "bundle"]
    assert len(cards) == 2, cards  # v1's, copied, and v2's
    registry = Registry(settings)
    assert registry.load_bundle("2").version == "2"
    assert registry.load_bundle("1").version == "1"  # the old version, via `_relocated`
