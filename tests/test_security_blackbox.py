"""The black-box check of issue 18 (``bench/security_check.py``) against a fresh ``pcrm serve``."""

from __future__ import annotations

import subprocess
import sys

from bot.settings import ROOT


def test_black_box_security_check_holds_against_a_fresh_server() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "security_check.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8/8 checks hold" in done.stdout
