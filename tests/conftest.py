"""Shared test set-up: no display, and every run/cache folder inside the test's tmp_path."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
import torch  # noqa: E402

# Two cores: keep torch from oversubscribing them when pytest runs alongside other work.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("genstudio-home")
    monkeypatch.setenv("GENSTUDIO_HOME", str(home / "data"))
    monkeypatch.setenv("GENSTUDIO_CACHE_DIR", str(home / "cache"))
    # No shipped pretrained runs unless a test asks for them: a window would open one at start.
    monkeypatch.setenv("GENSTUDIO_PRETRAINED", str(home / "no-pretrained"))
