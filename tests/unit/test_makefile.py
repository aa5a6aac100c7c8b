"""The Makefile's install step: unchanged by default, torch's CPU index added on request."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _install_line(*variables: str) -> list[str]:
    done = subprocess.run(
        ["make", "-n", "-B", "install", *variables], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if "pip install" in ln and " -e " in ln]
    return line.split()


def test_torch_index_url_adds_the_cpu_index_and_changes_nothing_else():
    plain = _install_line()
    assert "--extra-index-url" not in plain and "constraints.txt" in plain
    cpu = _install_line(f"TORCH_INDEX_URL={CPU}")
    at = cpu.index("--extra-index-url")
    assert cpu[at + 1] == CPU
    assert cpu[:at] + cpu[at + 2 :] == plain
