"""Packaging: one version everywhere, a valid desktop entry and icons, the user-menu installer,
and the bundle's launcher opening the app offscreen (the check `make bundle` runs on a build;
here on the source launcher, since building a bundle takes minutes)."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cli_helpers import genstudio as run_genstudio
from PIL import Image

import genstudio

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_lives_in_one_place():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject
    assert re.search(r'version = \{ attr = "genstudio.__version__" \}', pyproject)
    assert re.fullmatch(r"\d+\.\d+\.\d+", genstudio.__version__)
    assert run_genstudio("--version").stdout.strip() == f"genstudio {genstudio.__version__}"
    launcher = subprocess.run([sys.executable, str(ROOT / "packaging" / "launcher.py"), "--version"],
                              capture_output=True, text=True, timeout=120)
    assert launcher.returncode == 0 and launcher.stdout.strip() == f"genstudio {genstudio.__version__}"


def test_desktop_entry_and_icons():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # keys are case-sensitive
    entry.read(ROOT / "packaging" / "genstudio.desktop", encoding="utf-8")
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application" and desktop["Exec"] == "genstudio"
    assert desktop["Icon"] == "genstudio" and desktop["Terminal"] == "false"
    assert desktop["Categories"].endswith(";") and desktop["Keywords"].endswith(";")
    assert ET.parse(ROOT / "assets" / "genstudio.svg").getroot().tag.endswith("svg")
    pngs = sorted((ROOT / "assets" / "icons").glob("genstudio-*.png"))
    assert {48, 128, 256} <= {int(p.stem.split("-")[1]) for p in pngs}
    for png in pngs:
        size = int(png.stem.split("-")[1])
        with Image.open(png) as image:
            assert image.size == (size, size) and image.mode == "RGBA"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux desktop entry")
def test_install_desktop_entry_points_the_menu_at_the_given_program(tmp_path):
    exe = tmp_path / "my apps" / "genstudio"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    script = str(ROOT / "packaging" / "install-desktop-entry.sh")
    subprocess.run(["bash", script, str(exe)], env=env, check=True, capture_output=True, timeout=60)
    installed = (tmp_path / "data" / "applications" / "genstudio.desktop").read_text(encoding="utf-8")
    assert f'Exec="{exe}"' in installed.splitlines()
    icons = tmp_path / "data" / "icons" / "hicolor"
    assert (icons / "scalable" / "apps" / "genstudio.svg").is_file()
    assert (icons / "256x256" / "apps" / "genstudio.png").is_file()
    missing = subprocess.run(["bash", script, str(tmp_path / "nothing")], env=env, capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 1 and "not an executable" in missing.stderr
    subprocess.run(["bash", script, "--uninstall"], env=env, check=True, capture_output=True, timeout=60)
    assert not list((tmp_path / "data").rglob("genstudio*"))


def test_the_bundle_spec_builds_from_the_launcher_and_ships_the_assets():
    spec = (ROOT / "packaging" / "genstudio.spec").read_text(encoding="utf-8")
    compile(spec, "genstudio.spec", "exec")  # PyInstaller executes it as Python
    assert '"launcher.py"' in spec and '"assets"' in spec and 'collect_submodules("genstudio")' in spec
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "packaging/genstudio.spec" in makefile and "tools/check_bundle.py" in makefile


def test_the_launcher_opens_the_app_offscreen_and_closes_it():
    """tools/check_bundle.py's own checks (less the training run) on packaging/launcher.py."""
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "check_bundle.py"), "--source", "--no-train",
                             "--smoke-ms", "1000"], capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "window 'genstudio'" in result.stdout and "with its icon" in result.stdout
    assert "check passed" in result.stdout
