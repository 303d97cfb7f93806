"""The README's code blocks run: the Architecture section's four "add a ..." blocks, each in a fresh
interpreter (so what they register does not leak into other tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


ARCHITECTURE_BLOCKS = re.findall(r"```python\n(.*?)```", _section("Architecture"), flags=re.S)


def test_the_architecture_section_shows_four_extensions():
    kinds = [re.search(r"register_(objective|behaviour|probe_class|scorer)\b", b) for b in ARCHITECTURE_BLOCKS]
    assert sorted(k.group(1) for k in kinds if k) == ["behaviour", "objective", "probe_class", "scorer"]


@pytest.mark.parametrize("block", ARCHITECTURE_BLOCKS, ids=lambda b: re.search(r"register_\w+", b).group(0))
def test_architecture_block_runs(block, tmp_path):
    run = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
