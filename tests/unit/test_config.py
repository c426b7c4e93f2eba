"""Settings: embedded defaults, a TOML file, the environment, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.config import load_settings
from dicom_node.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]


def test_embedded_defaults():
    settings = load_settings()
    assert settings.dicom.ae_title == "DICOM_NODE"
    assert settings.series.stable_after_s == 10.0
    assert [r.pipeline for r in settings.selection.rules] == ["cta", "cta", "ich"]
    assert settings.storage.url.startswith("sqlite:///")


def test_example_config_parses_and_overrides(monkeypatch):
    monkeypatch.delenv("DICOM_NODE_CONFIG", raising=False)
    settings = load_settings(REPO / "config" / "node.example.toml")
    assert settings.export.destinations[0].name == "pacs"
    assert settings.dicom.allowed_calling_ae_titles  # the example restricts senders


def test_environment_overrides_file(tmp_path, monkeypatch):
    path = tmp_path / "node.toml"
    path.write_text("[dicom]\nport = 4000\n[series]\nstable_after_s = 3.5\n")
    monkeypatch.setenv("DICOM_NODE_DICOM__PORT", "4100")
    settings = load_settings(path)
    assert settings.dicom.port == 4100
    assert settings.series.stable_after_s == 3.5


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[dicom]\nae_title = "THIS_AE_TITLE_IS_TOO_LONG"\n', "ae_title"),
        ("[series]\nstable_after_s = -1\n", "stable_after_s"),
        ("[dicom]\nunknown_key = 1\n", "unknown_key"),
        ("[dicom\n", "cannot read"),
    ],
)
def test_invalid_configuration_names_file_and_key(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        load_settings(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_results_validation_defaults_to_if_available_and_reads_the_older_flag(monkeypatch):
    from dicom_node.config import ResultSettings

    assert ResultSettings().validation == "if-available"
    assert ResultSettings.model_validate({"validate_with_dciodvfy": False}).validation == "off"
    assert ResultSettings.model_validate({"validate_with_dciodvfy": True}).validation == "dciodvfy"
    monkeypatch.setenv("PATH", "/nonexistent")
    assert not ResultSettings(validation="if-available").dciodvfy_enabled()
    assert ResultSettings(validation="dciodvfy").dciodvfy_enabled()  # the job then fails loudly
    assert not ResultSettings(validation="off").dciodvfy_enabled()


def test_a_node_that_requires_dciodvfy_does_not_start_without_it(monkeypatch, tmp_path):
    from dicom_node.errors import ConfigurationError
    from dicom_node.results.validate import check_validation_setting

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match="dicom3tools"):
        check_validation_setting("dciodvfy")
    notice = check_validation_setting("if-available")
    assert notice is not None and "highdicom" in notice
    assert check_validation_setting("off") is None
