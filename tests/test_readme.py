"""The README's example runs and does what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).parent.parent / "README.md"


def test_readme_example_runs():
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    x = torch.randn(32, 4, 8, 8)
    (z1, z2), log_det = namespace["inn"](x)
    assert z1.shape == (32, 8, 4, 4) and z2.shape == (32, 128) and log_det.shape == (32,)
    assert namespace["x_back"].shape == (32, 4, 8, 8)
