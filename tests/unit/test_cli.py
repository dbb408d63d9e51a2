"""The console scripts are installed and describe themselves (real processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import provex

SCRIPTS = {
    "provex-registry": "national registry",
    "provex-node": "provincial exchange node",
}


@pytest.mark.parametrize("script, words", SCRIPTS.items(), ids=SCRIPTS.keys())
def test_console_script_prints_help_and_version(script: str, words: str) -> None:
    path = Path(sys.executable).parent / script
    assert path.exists(), f"{script} is not installed beside {sys.executable}"
    shown = subprocess.run(
        [str(path), "--help"], check=False, capture_output=True, text=True, timeout=30
    )
    assert shown.returncode == 0
    assert words in shown.stdout
    version = subprocess.run(
        [str(path), "--version"], check=False, capture_output=True, text=True, timeout=30
    )
    assert version.returncode == 0
    assert provex.__version__ in version.stdout
