"""One shared-data lookup for router, distill, tests and benchmarks, and its error."""

from __future__ import annotations

from pathlib import Path

import pytest

import distill.data
import router.data
from tierwise_common.data_dir import DATA_ENV_VAR, MissingDataError, data_root, require_data


def test_order_flag_then_env_then_beside_the_repo(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    assert data_root() == Path(__file__).resolve().parents[2].parent / "shared" / "data"
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "flag") == tmp_path / "flag"


def test_router_and_distill_use_the_same_lookup(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert distill.data.data_root() == tmp_path
    assert router.data.default_mmlu_dir() == tmp_path / "routellm" / "mmlu"


def test_missing_data_says_where_it_was_expected(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    (tmp_path / "banking77").mkdir()
    (tmp_path / "banking77" / "test.csv").write_text("text,category\n")
    assert require_data("banking77", "test.csv") == tmp_path / "banking77" / "test.csv"
    with pytest.raises(MissingDataError) as err:
        require_data("routellm", "mmlu")
    assert str(tmp_path / "routellm" / "mmlu") in str(err.value) and DATA_ENV_VAR in str(err.value)
    assert isinstance(err.value, FileNotFoundError)
