"""``gpunn info``: versions, the BLAS, which backend ``auto`` would pick and why, and the
CUDA checks (import, device, cuBLAS, NVRTC) it passed or the first it failed."""

from __future__ import annotations

import platform

import click

from gpunn.cli.main import DEVICE_OPTION, select_backend


def _version(module_name: str) -> str:
    try:
        module = __import__(module_name)
    except Exception as exc:  # a broken install should still let `gpunn info` report
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name:
            return "not installed"
        exc = exc.__cause__ or exc  # CuPy wraps the loader's error in a banner of advice
        first = next((line.strip() for line in str(exc).splitlines()
                      if line.strip().strip("=")), "")
        return f"installed but broken ({type(exc).__name__}: {first})"
    return getattr(module, "__version__", "unknown")


def _blas() -> str:
    import numpy as np

    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # show_config's layout differs across NumPy versions
        return "unknown"


@click.command()
@DEVICE_OPTION
def info(device: str):
    """Show versions, the BLAS and the backend gpunn would use (and why)."""
    import numpy as np

    from gpunn import __version__

    rows = [
        ("gpunn", __version__),
        ("Python", platform.python_version()),
        ("NumPy", f"{np.__version__} (BLAS: {_blas()})"),
        ("Numba", _version("numba")),
        ("CuPy", _version("cupy")),
    ]
    be = select_backend(device)
    rows.append(("backend", f"{be.name} on {be.device}"))
    rows.append(("why", be.reason))
    from gpunn import backend

    rows.append(("CPU threads", f"{backend.num_threads()} of {backend.cpu_count()} cores "
                                f"(--threads or $GPUNN_NUM_THREADS on a training command)"))
    if be.checks:  # what select() tried before choosing: the first failure is the cause
        rows.append(("CUDA checks", ", ".join(f"{check} {status}"
                                              for check, status in be.checks)))
    if be.name == "cupy":
        mem = be.memory_info()
        rows.append(("GPU memory", f"{mem['free'] / 2**30:.1f} GiB free of "
                                   f"{mem['total'] / 2**30:.1f} GiB"))
    rows += _ranks(be)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


def _ranks(be) -> list:
    """The rows about data-parallel runs: this rank and the job's size, MPI, NCCL."""
    from gpunn import distributed

    comm = distributed.world()  # mpi4py is imported only under mpiexec with several ranks
    if comm.size > 1:
        mpi = f"yes ({' '.join(comm.MPI.Get_library_version().split()[:3])})"
        ranks = f"{comm.size} (this is rank {comm.rank}; only rank 0 prints)"
    else:
        version = _version("mpi4py")
        mpi = (f"mpi4py {version}; run under mpiexec -n N" if version[0].isdigit()
               else f"mpi4py {version}; pip install 'gpunn[mpi]'")
        ranks = "1 (not started by mpiexec)"
    nccl = distributed.nccl_available() if be.name == "cupy" else "no (needs --device cuda)"
    return [("ranks", ranks), ("MPI", mpi), ("NCCL", nccl)]
