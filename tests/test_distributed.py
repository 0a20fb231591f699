"""gpunn.distributed: the communicators and data-parallel training.

The tests without a marker run in the default suite (one process, no MPI needed); those
marked ``mpi`` run under ``mpiexec -n N python -m mpi4py -m pytest -m mpi`` and pass at any
N, each rank training the one-process reference itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import gpunn
from gpunn import book, distributed
from gpunn.distributed import NCCL_DTYPES, NCCLComm, Single, pack, unpack
from gpunn.optim import SGD
from gpunn.train import DistributedStep, LayerStep, choose_step, evaluate, fit


# -- one process --------------------------------------------------------------------------------
def test_single_is_rank_0_of_1_and_changes_nothing():
    comm, a = Single(), np.arange(4.0)
    assert (comm.rank, comm.size) == (0, 1)
    assert comm.all_reduce(a) is a and comm.broadcast(a) is a and a.tolist() == [0, 1, 2, 3]
    assert comm.any(True) and not comm.any(False)


def test_the_launchers_environment_gives_size_and_ranks():
    assert distributed.launched_size({}) == 1
    assert distributed.launched_size({"PMI_SIZE": "4"}) == 4
    assert distributed.launched_size({"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert distributed.launched_rank({"PMI_RANK": "2"}) == 2
    assert distributed.local_rank({"OMPI_COMM_WORLD_LOCAL_RANK": "1"}) == 1
    assert distributed.local_rank({"MPI_LOCALRANKID": "3"}) == 3
    assert distributed.local_rank({}) == 0


def test_pack_and_unpack_move_every_layer_through_one_buffer():
    arrays = [np.ones((2, 3), np.float32), np.full(4, 2.0, np.float32)]
    buffer = pack(arrays, np)
    assert buffer.shape == (10,) and buffer.dtype == np.float32
    unpack(buffer * 3, arrays)
    assert arrays[0].tolist() == [[3.0] * 3] * 2 and arrays[1].tolist() == [6.0] * 4


def test_one_rank_keeps_the_fused_step_and_two_take_the_data_parallel_one():
    net, opt = gpunn.Network([784, 10, 10], seed=0, backend="cpu"), SGD(1.0)
    assert not isinstance(choose_step(net, opt, comm=Single()), DistributedStep)
    two = SimpleNamespace(rank=0, size=2)
    step = choose_step(net, opt, comm=two)
    assert isinstance(step, DistributedStep) and isinstance(step, LayerStep)


class _FakeDeviceArray:
    """What NCCLComm reads of a CuPy array: data.ptr, size, dtype, flags."""

    def __init__(self, n, dtype, contiguous=True):
        self.data, self.size, self.dtype = SimpleNamespace(ptr=4096), n, np.dtype(dtype)
        self.flags, self.strides = SimpleNamespace(c_contiguous=contiguous), (8,)


_FakeDeviceArray.__module__ = "cupy._core.core"  # how NCCLComm tells a device array


class _FakeNCCL:
    def __init__(self):
        self.calls = []
        outer = self

        class NcclCommunicator:
            def __init__(self, size, uid, rank):
                outer.calls.append(("init", size, uid, rank))

            def allReduce(self, *args):  # noqa: N802 - NCCL's name
                outer.calls.append(("allReduce", *args))

            def bcast(self, *args):
                outer.calls.append(("bcast", *args))

        self.NcclCommunicator = NcclCommunicator

    def get_unique_id(self):
        return (7, 7, 7)


class _FakeMPI:
    rank, size = 0, 2

    def __init__(self):
        self.sent, self.reduced = [], []

    def broadcast_object(self, obj, root=0):
        self.sent.append(obj)
        return obj

    def all_reduce(self, a):
        self.reduced.append(a)
        return a


def test_nccl_id_comes_from_rank_0_and_device_arrays_reduce_on_the_stream_in_place():
    nccl, mpi = _FakeNCCL(), _FakeMPI()
    comm = NCCLComm(mpi, nccl=nccl, stream=lambda: 99)
    assert mpi.sent == [(7, 7, 7)] and nccl.calls == [("init", 2, (7, 7, 7), 0)]
    a = _FakeDeviceArray(10, np.float32)
    assert comm.all_reduce(a) is a
    # send and receive buffers are the same pointer: no copy, on the compute stream
    assert nccl.calls[-1] == ("allReduce", 4096, 4096, 10, NCCL_DTYPES["float32"], 0, 99)
    comm.broadcast(_FakeDeviceArray(3, np.float64), root=0)
    assert nccl.calls[-1] == ("bcast", 4096, 3, NCCL_DTYPES["float64"], 0, 99)
    host = np.zeros(3)
    comm.all_reduce(host)
    assert mpi.reduced == [host]  # host arrays go through MPI
    with pytest.raises(ValueError, match="contiguous"):
        comm.all_reduce(_FakeDeviceArray(3, np.float32, contiguous=False))


def test_a_rank_other_than_0_takes_the_id_rank_0_sent():
    nccl, mpi = _FakeNCCL(), _FakeMPI()
    mpi.rank = 1
    mpi.broadcast_object = lambda obj, root=0: (1, 2, 3) if obj is None else pytest.fail(obj)
    NCCLComm(mpi, nccl=nccl, stream=lambda: 0)
    assert nccl.calls == [("init", 2, (1, 2, 3), 1)]


def test_under_mpiexec_without_mpi4py_one_line_says_to_install_gpunn_mpi():
    code = ("import sys; sys.modules['mpi4py'] = None; from gpunn.cli.main import main; "
            "main(['info'])")
    env = {**os.environ, "PMI_SIZE": "2", "PMI_RANK": "0"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "install gpunn[mpi]" in lines[0], r.stderr
    other = subprocess.run([sys.executable, "-c", code], env={**env, "PMI_RANK": "1"},
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 2 and other.stderr == ""  # rank 0 speaks for the job


# -- several ranks (under mpiexec) ---------------------------------------------------------------
def flat(net) -> np.ndarray:
    return np.concatenate([p.ravel() for layer in net.layers for p, _, _ in layer.param_groups()])


def same_on_every_rank(comm, a) -> float:
    """The largest difference between this rank's ``a`` and rank 0's."""
    root = comm.broadcast(a.copy())
    return float(np.abs(root - a).max())


def train(make, data, comm, epochs=1, mbs=10, eta=3.0, **kw):
    net = make()
    fit(net, data, epochs, mbs, SGD(eta, n=len(data[1]), **kw), comm=comm)
    return net


@pytest.mark.mpi
def test_chapter1_mlp_on_n_ranks_equals_one_process(comm, mnist_small):
    X, y = mnist_small
    data = (X[:600], y[:600])

    def make():
        return gpunn.Network([784, 30, 10], seed=3, init="large")

    ranks, one = train(make, data, comm, epochs=2), train(make, data, Single(), epochs=2)
    assert np.abs(flat(ranks) - flat(one)).max() < 1e-5
    assert same_on_every_rank(comm, flat(ranks)) == 0.0


@pytest.mark.mpi
def test_chapter6_conv_net_on_n_ranks_equals_one_process(comm, mnist_small):
    X, y = mnist_small
    data = (X[:200], y[:200])
    row = book.get("ch6-relu")

    def make():
        return book.build(row, seed=4, backend="cpu")

    ranks = train(make, data, comm, eta=0.03, lmbda=0.1)
    one = train(make, data, Single(), eta=0.03, lmbda=0.1)
    assert np.abs(flat(ranks) - flat(one)).max() < 1e-5


@pytest.mark.mpi
def test_a_batch_smaller_than_the_ranks_and_momentum(comm, mnist_small):
    X, y = mnist_small
    data = (X[:43], y[:43])  # the last mini-batch holds 1 example: ranks > 0 add nothing

    def make():
        return gpunn.Network([784, 16, 10], seed=5, cost="cross-entropy")

    ranks = train(make, data, comm, mbs=7, eta=0.5, momentum=0.5)
    one = train(make, data, Single(), mbs=7, eta=0.5, momentum=0.5)
    assert np.abs(flat(ranks) - flat(one)).max() < 1e-5


@pytest.mark.mpi
def test_with_dropout_every_rank_keeps_the_same_weights(comm, mnist_small):
    X, y = mnist_small
    net = train(lambda: gpunn.Network([784, 30, 10], seed=6, dropout=0.5),
                (X[:300], y[:300]), comm, eta=0.5)
    assert same_on_every_rank(comm, flat(net)) == 0.0


@pytest.mark.mpi
def test_evaluation_is_split_and_summed(comm, mnist_small):
    X, y = mnist_small
    net = gpunn.Network([784, 30, 10], seed=7)
    split = evaluate(net, (X, y), topk=(1, 3), cost=True, batch_size=150, comm=comm)
    whole = evaluate(net, (X, y), topk=(1, 3), cost=True, batch_size=150)
    assert split["images"] == whole["images"] == len(y)
    assert split["correct"] == whole["correct"] and split["top3"] == whole["top3"]
    assert split["cost"] == pytest.approx(whole["cost"], rel=1e-6)


def test_info_without_mpiexec_shows_one_rank():
    from click.testing import CliRunner

    from gpunn.cli.main import cli

    r = CliRunner().invoke(cli, ["info", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "1 (not started by mpiexec)" in r.output and "NCCL" in r.output


def test_an_uncaught_exception_aborts_every_rank(monkeypatch):
    aborted, shown = [], []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: shown.append(exc[0]))
    distributed.abort_on_exception(SimpleNamespace(abort=aborted.append))
    sys.excepthook(RuntimeError, RuntimeError("boom"), None)
    assert shown == [RuntimeError] and aborted == [1]
