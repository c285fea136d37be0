"""Importing the package or its pytest plugin must not import torch, transformers or datasets."""

from __future__ import annotations

import subprocess
import sys


def test_plugin_import_is_light():
    code = ("import sys, pytest_llmppl, pytest_llmppl.plugin; "
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'numpy') if m in sys.modules]; "
            "print(heavy); assert not heavy, heavy")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
