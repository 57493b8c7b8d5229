"""Train the MLP classifier (examples/mlp_classifier.yaml) on scikit-learn's 8x8 digits
with the generated module's `step`, printing loss and test accuracy per epoch.

    pip install -e '.[examples]'        # scikit-learn: its digits ship with it, no network
    python examples/train_digits.py

The generated module does all the calculus: this script only shuffles minibatches,
calls `step`, and measures accuracy with `probabilities`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from generated import mlp_classifier as model

HIDDEN, EPOCHS, BATCH = 64, 30, 64


def bar(done: int, total: int, width: int = 24) -> str:
    filled = width * done // total
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def train(epochs: int = EPOCHS, seed: int = 0, quiet: bool = False) -> float:
    """Train and return the final test accuracy."""
    digits = load_digits()
    X = digits.data / 16.0  # pixels 0..16 -> 0..1
    X_train, X_test, y_train, y_test = train_test_split(
        X, digits.target, test_size=0.25, random_state=seed, stratify=digits.target
    )
    mean, scale = X_train.mean(axis=0), X_train.std(axis=0) + 1e-3
    X_train, X_test = (X_train - mean) / scale, (X_test - mean) / scale
    rng = np.random.default_rng(seed)
    n, k = X.shape[1], 10
    params = model.Params(
        W1=rng.normal(0, np.sqrt(2 / n), (n, HIDDEN)),
        b1=np.zeros(HIDDEN),
        W2=rng.normal(0, np.sqrt(1 / HIDDEN), (HIDDEN, k)),
        b2=np.zeros(k),
    )
    state = model.init_state(params)
    batches = int(np.ceil(len(y_train) / BATCH))
    accuracy = 0.0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(y_train))
        losses = []
        for b in range(batches):
            rows = order[b * BATCH : (b + 1) * BATCH]
            params, state, loss = model.step(
                params, state, X_train[rows], y_train[rows]
            )
            losses.append(loss)
            if not quiet:
                print(f"\repoch {epoch:2d} {bar(b + 1, batches)}", end="", flush=True)
        p = model.probabilities(X_test, *params)
        accuracy = float(np.mean(np.argmax(p, axis=1) == y_test))
        if not quiet:
            print(f"  loss {np.mean(losses):.4f}  test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    started = time.perf_counter()
    final = train()
    print(f"final test accuracy {final:.3f} in {time.perf_counter() - started:.1f} s")
