"""examples/train_digits.py: the generated MLP classifier's `step` trains on
scikit-learn's digits to at least 95% test accuracy, quickly."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="the `examples` extra (scikit-learn) is absent")

ROOT = Path(__file__).resolve().parent.parent


def test_train_digits_reaches_95_percent_quickly() -> None:
    spec = importlib.util.spec_from_file_location(
        "train_digits", ROOT / "examples" / "train_digits.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_digits"] = module
    spec.loader.exec_module(module)
    started = time.perf_counter()
    accuracy = module.train(quiet=True)
    assert accuracy >= 0.95
    assert time.perf_counter() - started < 60
