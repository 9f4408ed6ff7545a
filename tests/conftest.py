"""Shared fixtures: a real MLflow SQLite store with a trained, promoted model (built once)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from loan_default.core.config import Settings
from loan_default.data.dataset import DERIVED_SHA256, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_FILE = REPO_ROOT / "training" / "Default_Fin.csv"
TEST_API_KEY = "test-key-0123456789"


#: Modules dealt out first when `make test` runs the suite on two xdist workers. With
#: `--dist loadfile` a module is one unit of work, and xdist queues the units by their number of
#: tests, most first, so these modules of a few long tests would start last and one worker would
#: end the run alone on the soak. Seconds measured serially (`--durations`): the soak ~130,
#: the batch faults ~100, the simulated year ~45.
LONGEST_FIRST = (
    "tests/hardening/test_soak.py",
    "tests/worker/test_batch_faults.py",
    "tests/test_simulated_year.py",
)


@pytest.hookimpl(optionalhook=True)  # unknown to pytest under `-p no:xdist`
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's `loadfile` scheduling with `LONGEST_FIRST` at the head of its queue."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFirst(LoadFileScheduling):  # type: ignore[misc]
        def _assign_work_unit(self, node: Any) -> None:
            for module in reversed(LONGEST_FIRST):
                if module in self.workqueue:
                    self.workqueue.move_to_end(module, last=False)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (a zombie still answers kill(0))."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # "pid (comm) state ...": comm may hold ")"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_url(db: int = 0) -> str:
    return f"redis://127.0.0.1:{os.environ.get('REDIS_PORT', '6379')}/{db}"


def queued_batch(db: int = 6) -> dict[str, str]:
    """Batch settings on the test Redis with a key prefix and queue of their own that no worker
    consumes: a submit answers 202 and its tasks wait in the queue (HTTP-layer tests)."""
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    return {
        "celery_broker_url": redis_url(db),
        "batch_key_prefix": prefix,
        "celery_queue": prefix + "q",
    }


class RecordingDispatcher:
    """A `services.batch.Dispatcher` that records what would be published (in-process apps)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def dispatch(self, job_id: str, n_chunks: int) -> None:
        self.sent.append((job_id, n_chunks))

    def broker_status(self) -> dict[str, object]:
        return {"type": "recording", "status": "ok", "queued_tasks": len(self.sent)}

    def close(self) -> None:
        return None


def make_settings(store: Path, **overrides: object) -> Settings:
    """Settings for an MLflow store in `store` (tests never touch the repo's `mlflow/`)."""
    values: dict[str, object] = {
        "environment": "test",
        "api_keys": TEST_API_KEY,
        "mlflow_tracking_uri": f"sqlite:///{store / 'mlflow.db'}",
        "mlflow_artifact_root": str(store / "artifacts"),
        "data_path": str(DATA_FILE),
        "decision_store_url": f"sqlite:///{store / 'decisions.db'}",
        # In-process apps (hundreds per session) write on the thread: a writer child costs each
        # app's start-up ~0.5 s. The child is the default of every served API in the suite
        # (`store_env`: uvicorn, the containers) and has its own tests (test_remote.py).
        "decision_writer": "thread",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def data_file() -> Path:
    assert DATA_FILE.exists(), "run `make data` first (make test does)"
    assert sha256_file(DATA_FILE) == DERIVED_SHA256
    return DATA_FILE


def train_store(store: Path) -> Path:
    """Train, register and promote `loan-default` v1 into a new MLflow SQLite store `store`."""
    from loan_default.training.pipeline import train

    store.mkdir(parents=True)
    report = train(make_settings(store), report_path=store / "report.json")
    assert report["promoted"] is True
    return store


#: `workerinput` key of the store the xdist controller trained for all workers.
TEMPLATE_KEY = "loan_default_trained_store"
_TEMPLATE = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, train the session model once, in the controller, before any worker starts.

    Each worker used to train its own in its first test's setup, which pytest-timeout counts
    against that test's 600 s. The first test is the soak (`LONGEST_FIRST`): on a CI run where
    training took 8.5 min instead of ~20 s, the soak timed out. Trained here, the model costs no
    test's budget, and one training (~8 s, untraced by coverage) replaces two concurrent ones.
    Workers copy it (`trained_store`), so each still has a store of its own.
    """
    if hasattr(config, "workerinput") or config.getoption("dist", "no") == "no":
        return
    if config.getoption("collectonly") or config.getoption("markexpr", "") == "unit":
        return
    if not DATA_FILE.exists():
        return  # `data_file` fails every test that needs the model, with the fix in its message
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="loan-default-model-"))
    config.add_cleanup(lambda: shutil.rmtree(root, ignore_errors=True))
    config.stash[_TEMPLATE] = train_store(root / "store")


@pytest.hookimpl(optionalhook=True)  # unknown to pytest under `-p no:xdist`
def pytest_configure_node(node: Any) -> None:
    """Hand each xdist worker the path of the controller's trained store."""
    template = node.config.stash.get(_TEMPLATE, None)
    if template is not None:
        node.workerinput[TEMPLATE_KEY] = str(template)


@pytest.fixture(scope="session")
def trained_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_file: Path
) -> Path:
    """An MLflow SQLite store where `loan-default` v1 is trained and promoted to @production.

    Session-scoped because training takes ~20 s; tests that change the registry must copy it
    (see `fresh_store`). Under xdist a copy of the store the controller trained
    (`pytest_configure`), else trained here.
    """
    store = tmp_path_factory.getbasetemp() / "mlflow-store"
    template = getattr(request.config, "workerinput", {}).get(TEMPLATE_KEY)
    if template is not None:
        return copy_store(Path(template), store)
    return train_store(store)


def copy_store(src: Path, dst: Path) -> Path:
    """Copy the MLflow store `src` to `dst`, as if it had been trained at `dst`.

    A SQLite store records absolute paths: the experiment's `artifact_location`, each run's
    `artifact_uri`, each version's `source`. Every recorded path under `src` is rewritten to the
    same path under `dst`, so the copy reads and writes only its own files: a retraining in a copy
    adds nothing to the store it was copied from (a later test that counts that store's bundles
    would see it), and a copy of a copy is no different from a copy of the original. (A plain
    `cp -r mlflow/` keeps the old paths; `Registry._relocated` serves it, see test_transfer.py.)
    """
    import shutil
    import sqlite3

    shutil.copytree(src, dst)
    con = sqlite3.connect(dst / "mlflow.db")
    with con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            columns = [
                r[1]
                for r in con.execute(f'pragma table_info("{table}")')
                if any(t in str(r[2]).upper() for t in ("CHAR", "TEXT", "CLOB"))
            ]
            for column in columns:
                con.execute(
                    f'update "{table}" set "{column}" = replace("{column}", ?, ?) '
                    f'where instr("{column}", ?) > 0',
                    (f"{src}/", f"{dst}/", f"{src}/"),
                )
    con.close()
    return dst


@pytest.fixture
def fresh_store(trained_store: Path, tmp_path: Path) -> Path:
    """A private copy of the trained store, safe to promote/rollback and train in."""
    return copy_store(trained_store, tmp_path / "store")


@pytest.fixture(scope="session")
def trained_settings(trained_store: Path) -> Settings:
    return make_settings(trained_store)


@pytest.fixture(scope="session")
def bundle(trained_settings: Settings):  # type: ignore[no-untyped-def]
    """The promoted model bundle, loaded through the registry like the API does."""
    from loan_default.registry.client import Registry

    loaded = Registry(trained_settings).load_alias()
    assert loaded is not None
    return loaded


@pytest.fixture
def quick_training(monkeypatch: pytest.MonkeyPatch, bundle: Any) -> int:
    """Retrain through the real pipeline, fitting only the registered family at the depth the
    session model chose (returned).

    For the lifecycle tests (gate, registry, the PostgreSQL backend): the family and depth search
    is what `test_first_training_meets_targets_and_is_promoted` measures; repeated in every
    retraining it cost ~30 extra model fits each. Same seed, data and depth, so the retrained
    model equals the session model (the gate finds it "not better", never better).
    """
    from loan_default.training import candidates, pipeline

    depth = int(bundle.card.params["max_depth"])
    monkeypatch.setattr(pipeline, "FAMILIES", (Settings.model_fields["candidate"].default,))
    monkeypatch.setattr(candidates, "XGB_DEPTHS", (depth,))
    return depth
