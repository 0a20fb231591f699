"""Data-parallel training across processes: the communicator the training loop takes.

``mpiexec -n N gpunn train ...`` starts N copies of one run. Each rank takes its slice of
every global mini-batch of the one seeded permutation, backpropagates it, and the ranks
sum their gradients (one buffer, one all-reduce a step), so N ranks compute the gradient
one process would; the optimiser then steps identically everywhere.

A communicator has ``rank``, ``size``, ``broadcast(a, root=0)`` and ``all_reduce(a)`` (sum,
in place) of NumPy or CuPy arrays, and ``any(flag)``:

- :class:`Single`: one process, every operation a no-op (no MPI needed);
- :class:`MPIComm`: mpi4py's ``COMM_WORLD``, host (NumPy) buffers;
- :class:`NCCLComm`: NCCL (``cupy.cuda.nccl``) for CuPy arrays on the compute stream, no host
  copy, its id made by rank 0 and broadcast over MPI; host arrays still go through MPI.

:func:`world` picks one: MPI only when the process was started by ``mpiexec`` with more
than one rank (mpi4py is imported then, and not before), else :class:`Single`. Other
projects can use these with their own arrays, as they can ``gpunn.backend``.

What it leaves out: model parallelism, and overlapping the all-reduce with backpropagation
(one buffer after the step's backward pass, as the book's loop has it).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from gpunn.errors import GpunnError

__all__ = ["Single", "MPIComm", "NCCLComm", "world", "launched_size", "launched_rank", "local_rank",
           "local_size", "pack", "unpack", "abort_on_exception", "MPIUnavailable"]

# What launchers set: MPICH's Hydra (PMI_*), Open MPI (OMPI_COMM_WORLD_*), PMIx, Slurm.
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
_LOCAL_RANK_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_LOCAL_RANK",
                    "SLURM_LOCALID")
_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_LOCAL_SIZE",
                    "SLURM_NTASKS_PER_NODE")


class MPIUnavailable(GpunnError):
    """Started under ``mpiexec`` with several ranks, but mpi4py cannot be imported."""


def launched_size(environ=None) -> int:
    """How many ranks the launcher started (from its environment variables); 1 if none."""
    environ = os.environ if environ is None else environ
    for name in _SIZE_VARS:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def launched_rank(environ=None) -> int:
    """This process's rank as the launcher set it (before MPI starts); 0 if none."""
    environ = os.environ if environ is None else environ
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def local_rank(environ=None, default: int = 0) -> int:
    """This rank's index among the ranks of its machine (which GPU it takes)."""
    environ = os.environ if environ is None else environ
    for name in _LOCAL_RANK_VARS:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return default


def local_size(environ=None) -> int:
    """How many ranks share this machine (they split its cores); the world size if unknown."""
    environ = os.environ if environ is None else environ
    for name in _LOCAL_SIZE_VARS:
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return launched_size(environ)


class Single:
    """One process: rank 0 of 1; every collective returns its argument unchanged."""

    rank, size, name = 0, 1, "single process"

    def broadcast(self, a, root: int = 0):
        return a

    def all_reduce(self, a):
        return a

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        sys.exit(code)


class MPIComm:
    """mpi4py's ``COMM_WORLD`` (or ``comm``): collectives of host arrays, in place."""

    name = "MPI"

    def __init__(self, comm=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def broadcast(self, a, root: int = 0):
        """``a`` (a contiguous array, the same shape on every rank) as rank ``root`` has it."""
        host = _contiguous(a)
        self.comm.Bcast(host, root=root)
        return _back(a, host)

    def all_reduce(self, a):
        """The element-wise sum of ``a`` over the ranks, written into ``a``."""
        host = _contiguous(a)
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        return _back(a, host)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any (a stop agreed by all)."""
        return bool(self.comm.allreduce(bool(flag), op=self.MPI.LOR))

    def broadcast_object(self, obj, root: int = 0):
        return self.comm.bcast(obj, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every rank now (MPI_Abort): what an error on one rank must do, or the others
        would wait in the next all-reduce for ever."""
        self.comm.Abort(code)


# NCCL's dtype codes (nccl.h's ncclDataType_t), by NumPy dtype.
NCCL_DTYPES = {"int8": 0, "uint8": 1, "int32": 2, "uint32": 3, "int64": 4, "uint64": 5,
               "float16": 6, "float32": 7, "float64": 8}
NCCL_SUM = 0


class NCCLComm:
    """All-reduce and broadcast of CuPy arrays with NCCL, on the current (compute) stream.

    ``mpi`` (an :class:`MPIComm`) carries the NCCL id from rank 0 to the others and every
    collective of host arrays. ``nccl`` is ``cupy.cuda.nccl`` and ``stream()`` the pointer
    of the stream to run on (CuPy's current one: the compute stream), both injectable.
    """

    name = "NCCL"

    def __init__(self, mpi: MPIComm, nccl=None, stream=None):
        if nccl is None:
            from cupy.cuda import nccl
        self.mpi, self.nccl = mpi, nccl
        self._stream = stream or _current_stream
        self.rank, self.size = mpi.rank, mpi.size
        uid = nccl.get_unique_id() if mpi.rank == 0 else None
        uid = mpi.broadcast_object(uid, root=0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)

    def _on_device(self, a) -> bool:
        return type(a).__module__.split(".")[0] == "cupy"

    def all_reduce(self, a):
        if not self._on_device(a):
            return self.mpi.all_reduce(a)
        ptr, count, dtype = _nccl_args(a)
        self.comm.allReduce(ptr, ptr, count, dtype, NCCL_SUM, self._stream())
        return a

    def broadcast(self, a, root: int = 0):
        if not self._on_device(a):
            return self.mpi.broadcast(a, root)
        ptr, count, dtype = _nccl_args(a)
        self.comm.bcast(ptr, count, dtype, root, self._stream())
        return a

    def any(self, flag: bool) -> bool:
        return self.mpi.any(flag)

    def broadcast_object(self, obj, root: int = 0):
        return self.mpi.broadcast_object(obj, root)

    def barrier(self) -> None:
        self.mpi.barrier()

    def abort(self, code: int = 1) -> None:
        self.mpi.abort(code)


def _current_stream() -> int:
    import cupy

    return cupy.cuda.get_current_stream().ptr


def _nccl_args(a):
    """(device pointer, element count, NCCL dtype code) of a contiguous CuPy array."""
    if not a.flags.c_contiguous:
        raise ValueError(f"NCCL needs a contiguous array; received strides {a.strides}")
    name = np.dtype(a.dtype).name
    if name not in NCCL_DTYPES:
        raise ValueError(f"NCCL reduces {', '.join(NCCL_DTYPES)}; received dtype {name}")
    return a.data.ptr, a.size, NCCL_DTYPES[name]


def _contiguous(a) -> np.ndarray:
    """A contiguous host array for MPI: ``a`` itself when it is one, else a host copy."""
    if isinstance(a, np.ndarray) and a.flags.c_contiguous:
        return a
    get = getattr(a, "get", None)
    return np.ascontiguousarray(get() if callable(get) else a)


def _back(a, host):
    """``host``'s values in ``a`` (unless they are one array already); returns ``a``."""
    if host is a:
        return a
    if isinstance(a, np.ndarray):
        a[...] = host
    else:  # a CuPy array reduced through the host
        a.set(host)
    return a


def pack(arrays, xp):
    """One flat buffer of ``arrays`` (so one all-reduce moves every layer's gradient)."""
    return xp.concatenate([a.reshape(-1) for a in arrays])


def unpack(buffer, arrays) -> None:
    """Write ``buffer``'s consecutive pieces back into ``arrays`` (in place)."""
    start = 0
    for a in arrays:
        a[...] = buffer[start:start + a.size].reshape(a.shape)
        start += a.size


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise MPIUnavailable(
            f"this run was started by mpiexec with {launched_size()} ranks but mpi4py cannot "
            f"be imported ({exc}); install gpunn[mpi] (pip install 'gpunn[mpi]')") from exc
    return MPI


_WORLD = None


def world(backend=None):
    """The communicator of this process: :class:`MPIComm` (or :class:`NCCLComm` for a CuPy
    ``backend`` where NCCL imports) when started by ``mpiexec`` with several ranks, else
    :class:`Single`. Made once and kept."""
    global _WORLD
    if _WORLD is None:
        _WORLD = MPIComm() if launched_size() > 1 else Single()
        if _WORLD.size > 1:
            abort_on_exception(_WORLD)
    if (backend is not None and getattr(backend, "name", "") == "cupy"
            and isinstance(_WORLD, MPIComm)):
        _WORLD = NCCLComm(_WORLD)
    return _WORLD


def abort_on_exception(comm) -> None:
    """Make an exception that ends this rank end every rank (MPI_Abort after the usual
    traceback), as ``python -m mpi4py`` does: the others would wait in the next collective
    for ever. Made by :func:`world` for a run of several ranks."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.flush()
        comm.abort(1)

    sys.excepthook = hook


def nccl_available() -> str:
    """'yes', or why NCCL cannot be used here (for ``gpunn info``)."""
    try:
        from cupy.cuda import nccl
    except Exception as exc:  # noqa: BLE001 - any failure to import is the answer
        return f"no ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return "yes" if getattr(nccl, "available", True) else "no (CuPy was built without NCCL)"
