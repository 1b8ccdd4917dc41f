"""Settings: environment, mdth.toml, the TARDIS_API_KEY alias, precedence, and secrets kept secret."""

import pytest

from mdth_engine.core.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in (
        "MDTH_LAKE",
        "MDTH_TARDIS_API_KEY",
        "TARDIS_API_KEY",
        "MDTH_WAREHOUSE",
        "MDTH_TARDIS_API_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MDTH_CONFIG", str(tmp_path / "mdth.toml"))


def test_defaults_match_the_design():
    s = Settings()
    assert s.lake == "./mdth-lake"
    assert s.tardis_api_url == "https://api.tardis.dev/v1"
    assert s.tardis_datasets_url == "https://datasets.tardis.dev/v1"
    assert s.api_key() is None
    assert s.warehouse_url().startswith("duckdb:///") and s.warehouse_url().endswith(
        "mdth-lake/warehouse.duckdb"
    )


def test_env_then_toml_then_overrides(monkeypatch, tmp_path):
    (tmp_path / "mdth.toml").write_text('lake = "/from/toml"\ntardis_api_url = "http://toml/v1"\n')
    assert Settings().lake == "/from/toml"
    monkeypatch.setenv("MDTH_LAKE", "/from/env")
    s = Settings()
    assert s.lake == "/from/env" and s.tardis_api_url == "http://toml/v1"
    assert load_settings(lake="/from/cli").lake == "/from/cli"
    assert load_settings(lake=None).lake == "/from/env"  # None means "not given on the command line"


def test_api_key_from_either_variable_and_never_printed(monkeypatch):
    monkeypatch.setenv("TARDIS_API_KEY", "sk-secret-123")
    s = Settings()
    assert s.api_key() == "sk-secret-123"
    assert "sk-secret-123" not in repr(s) and "sk-secret-123" not in str(s.model_dump())
    monkeypatch.setenv("MDTH_TARDIS_API_KEY", "sk-other")
    assert Settings().api_key() in {"sk-other", "sk-secret-123"}


def test_gcs_lake_gets_a_local_duckdb_warehouse_unless_configured(monkeypatch):
    assert load_settings(lake="gs://b/p").warehouse_url().startswith("duckdb:///")
    monkeypatch.setenv("MDTH_WAREHOUSE", "bigquery://proj/ds")
    assert Settings().warehouse_url() == "bigquery://proj/ds"
