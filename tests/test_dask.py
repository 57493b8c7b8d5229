"""examples/train_dask.py: training on a Dask cluster gives the single-machine result.

A loopback-only LocalCluster of two single-threaded worker processes trains a generated
model on a data set split into row blocks of unequal sizes (so a chunk weighted by
anything but its row count would show); the trained params and the losses must equal,
to rounding, those of the generated ``step`` run on the whole data set in this process.
Skips cleanly without the ``dask`` extra (``pip install -e '.[dask]'``).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, import_file

pytestmark = pytest.mark.slow  # a cluster of two processes: seconds

# Unequal row blocks, one of them odd-sized.
CHUNKS = (1000, 700, 1300, 999)
EPOCHS = 12


@pytest.fixture(scope="module")
def train_dask() -> ModuleType:
    # Imported here, not at collection: dask takes half a second to import, which
    # `pytest -m "not slow"` would pay for tests it deselects.
    for extra in ("dask", "dask.array", "distributed", "threadpoolctl"):
        pytest.importorskip(extra, reason="the dask extra is not installed")
    return import_file(ROOT / "examples" / "train_dask.py", "train_dask", keep=True)


@pytest.fixture(scope="module")
def client(
    train_dask: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    import dask

    scratch = tmp_path_factory.mktemp("dask")
    with (
        dask.config.set({"temporary-directory": str(scratch)}),
        train_dask.connect(workers=2) as client,
    ):
        yield client


@pytest.mark.parametrize("model", ["logistic_regression", "mlp"])
def test_trained_params_equal_single_machine(
    train_dask: ModuleType, client: Any, model: str
) -> None:
    module = train_dask.load_generated(model)
    arrays, params = train_dask.synthetic_data(model, sum(CHUNKS), CHUNKS)
    train_dask.prepare_workers(client, module, threads=1)
    data = train_dask.chunk_on_cluster(client, *arrays)
    assert [array.rows for array in data] == [list(CHUNKS)] * len(arrays)

    trained, losses = train_dask.train_distributed(client, module, data, params, EPOCHS)
    inputs = train_dask.gather(client, data)
    single, single_losses = train_dask.train_single_machine(
        module, inputs, params, EPOCHS
    )

    assert losses[-1] < losses[0]  # it trains
    np.testing.assert_allclose(losses, single_losses, rtol=1e-10)
    for name, got, want in zip(module.Params._fields, trained, single, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14, err_msg=name)


def test_workers_run_one_blas_thread(train_dask: ModuleType, client: Any) -> None:
    module = train_dask.load_generated("logistic_regression")
    train_dask.prepare_workers(client, module, threads=1)
    per_worker = client.run(train_dask.blas_threads)
    assert len(per_worker) == 2
    assert all(threads and set(threads) == {1} for threads in per_worker.values())


def test_cluster_is_on_loopback(client: Any) -> None:
    workers = client.scheduler_info()["workers"]
    assert client.scheduler.address.startswith("tcp://127.0.0.1:")
    assert all(address.startswith("tcp://127.0.0.1:") for address in workers)
