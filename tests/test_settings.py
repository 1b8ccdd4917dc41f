"""Settings: environment, mdth.toml, the TARDIS_API_KEY alias, precedence, and secrets kept secret."""

import pytest

from mdth_engine.core.settings import (
    Settings,
    SettingsError,
    SettingsWarning,
    load_settings,
    unknown_config_keys,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in (
        "MDTH_LAKE",
        "MDTH_TARDIS_API_KEY",
        "TARDIS_API_KEY",
        "MDTH_WAREHOUSE",
        "MDTH_TARDIS_API_URL",
        "MDTH_CONCURRENCY",
        "MDTH_GCE_SPOT",
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


def settings_error() -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return str(caught.value)


def test_a_bad_value_names_the_setting_its_value_and_where_to_fix_it(monkeypatch, tmp_path):
    monkeypatch.setenv("MDTH_CONCURRENCY", "abc")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "invalid settings: MDTH_CONCURRENCY='abc': Input should be a valid integer, unable to parse string as an "
        "integer (env MDTH_CONCURRENCY or mdth.toml key concurrency)"
    )
    monkeypatch.setenv("MDTH_GCE_SPOT", "maybe")
    message = settings_error()
    assert (
        "MDTH_GCE_SPOT='maybe': Input should be a valid boolean" in message
        and "; MDTH_CONCURRENCY=" in message
    )
    assert len(message.splitlines()) == 1


def test_a_bad_value_in_mdth_toml_and_a_broken_file(tmp_path):
    (tmp_path / "mdth.toml").write_text('concurrency = "x"\n')
    message = settings_error()
    assert "MDTH_CONCURRENCY='x'" in message and "mdth.toml key concurrency" in message
    (tmp_path / "mdth.toml").write_text("concurrency = \n")
    message = settings_error()
    assert "is not valid TOML" in message and "MDTH_CONFIG" in message


def test_a_secret_value_is_never_quoted(monkeypatch):
    with pytest.raises(SettingsError) as caught:
        load_settings(tardis_api_key=12345678)
    assert "12345678" not in str(caught.value) and "MDTH_TARDIS_API_KEY=(hidden)" in str(caught.value)


def test_unknown_mdth_toml_keys_warn_and_settings_still_load(tmp_path):
    (tmp_path / "mdth.toml").write_text('concurency = 4\nLAKE = "/upper"\nTARDIS_API_KEY = "sk-x"\n')
    with pytest.warns(
        SettingsWarning, match=r"unknown key 'concurency' is ignored \(did you mean concurrency\?\)"
    ):
        s = load_settings()
    assert s.concurrency == 8 and s.lake == "/upper" and s.api_key() == "sk-x"  # other keys still apply
    assert [line.split(": ", 1)[1] for line in unknown_config_keys()] == [
        "unknown key 'concurency' is ignored (did you mean concurrency?)"
    ]


def test_unknown_mdth_env_vars_are_not_an_error(monkeypatch):
    monkeypatch.setenv("MDTH_SIM_CACHE", "/tmp/x")
    monkeypatch.setenv("MDTH_CONCURENCY", "4")
    assert load_settings().concurrency == 8


def test_every_command_says_which_setting_is_bad_or_ignored(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from mdth_engine.cli import app

    lake = ["--lake", str(tmp_path / "lake")]
    monkeypatch.setenv("MDTH_CONCURRENCY", "abc")
    bad = CliRunner().invoke(app, ["lake", "ls", *lake])
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines() == [
        "mdth: error: invalid settings: MDTH_CONCURRENCY='abc': Input should be a valid integer, unable to parse "
        "string as an integer (env MDTH_CONCURRENCY or mdth.toml key concurrency)"
    ]
    monkeypatch.delenv("MDTH_CONCURRENCY")
    (tmp_path / "mdth.toml").write_text("concurency = 4\n")
    ok = CliRunner().invoke(app, ["lake", "ls", *lake])
    assert ok.exit_code == 0, ok.output
    assert (
        "mdth: warning: " in ok.stderr
        and "unknown key 'concurency' is ignored (did you mean concurrency?)" in ok.stderr
    )
