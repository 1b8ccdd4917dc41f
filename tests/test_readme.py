"""The README's generated parts match the code: the settings table and the feature list, and the two commands."""

from pathlib import Path

from mdth_engine.core.settings import settings_table
from mdth_engine.features.spec import features_markdown

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```sh", 1)[1].split("```", 1)[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in first_block] == ["make test", "make demo"]


def test_settings_table_is_generated_from_the_model():
    assert settings_table() in README, "regenerate with mdth_engine.core.settings.settings_table()"


def test_feature_list_is_generated_from_the_spec():
    assert features_markdown() in README, "regenerate with mdth_engine.features.spec.features_markdown()"
