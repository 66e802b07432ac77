"""Settings: read from the environment in one place, documented in one table."""

import pytest

from nst_core.settings import Settings, settings, settings_table


def test_settings_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NST_MEMORY_LIMIT_GB", "3.5")
    monkeypatch.setenv("NST_SPOOL", str(tmp_path))
    monkeypatch.setenv("NST_JIT", "1")
    monkeypatch.setenv("NST_WEIGHTS", "")  # empty counts as unset
    assert settings() == Settings(memory_limit_gb=3.5, spool=str(tmp_path), jit=True, weights=None)
    monkeypatch.setenv("NST_JIT", "0")
    assert settings().jit is False


def test_every_setting_is_in_the_documented_table():
    from conftest import REPO

    assert settings_table() in (REPO / "docs" / "running.md").read_text(), (
        "docs/running.md's settings table is out of date: `python -m nst_core.markdown` rewrites it"
    )


def test_the_default_spool_is_in_the_users_cache_not_a_folder_named_tilde(monkeypatch, tmp_path):
    from flows.results import spool_folder

    monkeypatch.delenv("NST_SPOOL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert spool_folder("s3://bucket/results").parent == tmp_path / ".cache" / "nst" / "spool"


def test_a_memory_limit_that_is_no_size_is_refused_naming_the_variable(monkeypatch):
    for text in ("nan", "inf", "-1", "0", "lots"):
        monkeypatch.setenv("NST_MEMORY_LIMIT_GB", text)
        with pytest.raises(ValueError, match=f"^NST_MEMORY_LIMIT_GB='{text}': give a number of GB above 0$"):
            settings()
