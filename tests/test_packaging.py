"""The packaging lists every package: a wheel (not only an editable install) has them all."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_cfg_lists_every_package_directory():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = {p.strip() for p in cfg["options"]["packages"].split(",")}
    found = {"gpunn." + ".".join(p.parent.relative_to(ROOT / "gpunn").parts)
             for p in (ROOT / "gpunn").rglob("__init__.py")} - {"gpunn."}
    found |= {"gpunn", "gpunn.kernels", "gpunn.cli"}
    assert found == listed, f"setup.cfg packages: missing {found - listed}, extra {listed - found}"
    mapping = cfg["options"]["package_dir"]
    assert "gpunn.kernels = kernels" in mapping and "gpunn.cli = cli" in mapping


def test_cuda_extras_bring_the_cuda_libraries_and_hints_name_them():
    from gpunn import backend

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras = cfg["options.extras_require"]
    # [ctk] brings NVRTC, cuBLAS and the headers; CuPy 14.0 is the first release with it
    assert extras["cuda12"].strip() == "cupy-cuda12x[ctk]>=14.0"
    assert extras["cuda13"].strip() == "cupy-cuda13x[ctk]>=14.0"
    for hint in (backend.INSTALL_HINT, backend.LIBRARY_HINT):
        for words in ("gpunn[cuda12]", "cupy-cuda12x[ctk]", "cupy-cuda13x[ctk]"):
            assert words in hint, f"{words!r} missing from the hint {hint!r}"
