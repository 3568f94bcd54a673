"""Fixtures for the order tools: one template database per test session,
copied to a fresh file for each test (a copy is ~1000x cheaper than a build)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tools.orders import OrderDB

REPO_ROOT = Path(__file__).resolve().parents[3]
# τ-bench's train tasks and gold results live beside the repository, not in it.
GOLD_DIR = REPO_ROOT.parent / "shared" / "datasets" / "tau_retail"


def copy_db(template: Path, dest: Path) -> OrderDB:
    """A fresh database at ``dest`` with the template's contents. The
    template is closed and checkpointed (no -wal file), so the file is whole."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{dest}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, dest)
    # Not durable: skips an fsync per commit, which dominates the gold replay.
    return OrderDB(dest, durable=False)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("orders") / "template.db"
    OrderDB.create(path).close()
    assert not Path(f"{path}-wal").exists()
    return path


@pytest.fixture(scope="session")
def initial_state(template_db: Path) -> dict:
    with OrderDB(template_db) as db:
        return db.export()


@pytest.fixture
def db(template_db: Path, tmp_path: Path):
    with copy_db(template_db, tmp_path / "orders.db") as fresh:
        yield fresh


@pytest.fixture(scope="session")
def gold_dir() -> Path:
    if not (GOLD_DIR / "tasks_train.json").is_file() or not (GOLD_DIR / "gold_train.json").is_file():
        pytest.skip(f"τ-bench gold data not found at {GOLD_DIR} (tasks_train.json, gold_train.json)")
    return GOLD_DIR
