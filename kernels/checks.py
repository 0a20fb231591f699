"""Input checks shared by every implementation of every op: one place, cheap, loud.

Each function checks ndim, shapes and dtypes (tuple and attribute reads only, no passes over
the data) and returns the output geometry, so a backend never re-derives it. Errors are
:class:`gpunn.errors.ConfigError` (a ``ValueError``) naming what was expected and what came.

Shape letters, used throughout ``gpunn.kernels``: ``N`` examples in the mini-batch, ``C``
input channels, ``H, W`` input height and width, ``F`` filters (output channels), ``KH, KW``
kernel height and width, ``OH, OW`` output height and width, ``K`` classes.
"""

from __future__ import annotations

import numpy as np

from gpunn.errors import ConfigError

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _floating(op: str, name: str, a) -> None:
    if a.dtype not in FLOATS:
        raise ConfigError(
            f"{op} expects {name} of dtype float32 or float64; received {name}.dtype={a.dtype}; "
            f"convert with {name}.astype(numpy.float32)"
        )


def _same_dtype(op: str, **arrays) -> None:
    dtypes = {name: a.dtype for name, a in arrays.items()}
    if len(set(dtypes.values())) > 1:
        got = ", ".join(f"{name}.dtype={d}" for name, d in dtypes.items())
        raise ConfigError(f"{op} expects one dtype for all its arrays; received {got}")


def _positive_int(op: str, name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{op} expects {name} to be an integer >= {minimum}; received {value!r}")
    return int(value)


def conv2d(x, w, b, stride, padding) -> tuple[int, int]:
    """Check conv2d's arguments; return the output size ``(OH, OW)``."""
    op = "conv2d"
    if x.ndim != 4:
        raise ConfigError(f"{op} expects x of shape (N, C, H, W); received x.shape={x.shape}")
    if w.ndim != 4:
        raise ConfigError(f"{op} expects w of shape (F, C, KH, KW); received w.shape={w.shape}")
    if w.shape[1] != x.shape[1]:
        raise ConfigError(
            f"{op} expects w of shape (F, C={x.shape[1]}, KH, KW) to match x.shape={x.shape}; "
            f"received w.shape={w.shape}"
        )
    if b.shape != (w.shape[0],):
        raise ConfigError(
            f"{op} expects b of shape (F,)=({w.shape[0]},); received b.shape={b.shape}"
        )
    _floating(op, "x", x)
    _same_dtype(op, x=x, w=w, b=b)
    stride = _positive_int(op, "stride", stride)
    padding = _positive_int(op, "padding", padding, minimum=0)
    kh, kw = w.shape[2:]
    hp, wp = x.shape[2] + 2 * padding, x.shape[3] + 2 * padding
    if kh > hp or kw > wp:
        raise ConfigError(
            f"{op} kernel (KH, KW)=({kh}, {kw}) is larger than the padded input "
            f"(H+2p, W+2p)=({hp}, {wp}) of x.shape={x.shape} with padding={padding}"
        )
    return (hp - kh) // stride + 1, (wp - kw) // stride + 1


def conv_pool(x, w, b, pool) -> tuple[int, int, int, int]:
    """Check conv_pool's arguments (a valid stride-1 convolution, then ``pool``x``pool``
    max-pooling every ``pool`` pixels); return ``(OH, OW, PH, PW)``: conv and pooled sizes."""
    oh, ow = conv2d(x, w, b, 1, 0)
    pool = _positive_int("conv_pool", "pool", pool)
    if oh < pool or ow < pool:
        raise ConfigError(f"conv_pool cannot pool {pool}x{pool} windows over the {oh}x{ow} "
                          f"convolution of x.shape={x.shape} by w.shape={w.shape}")
    return oh, ow, oh // pool, ow // pool


def max_pool2d(x, kernel, stride) -> tuple[int, int, int, int]:
    """Check max_pool2d's arguments; return ``(kernel, stride, OH, OW)``."""
    op = "max_pool2d"
    if x.ndim != 4:
        raise ConfigError(f"{op} expects x of shape (N, C, H, W); received x.shape={x.shape}")
    _floating(op, "x", x)
    kernel = _positive_int(op, "kernel", kernel)
    stride = kernel if stride is None else _positive_int(op, "stride", stride)
    if kernel > x.shape[2] or kernel > x.shape[3]:
        raise ConfigError(
            f"{op} kernel={kernel} is larger than the input (H, W)={x.shape[2:]} of "
            f"x.shape={x.shape}"
        )
    return kernel, stride, (x.shape[2] - kernel) // stride + 1, (x.shape[3] - kernel) // stride + 1


def softmax_cross_entropy(logits, labels) -> None:
    """Check softmax_cross_entropy's arguments (labels' range is checked by each kernel)."""
    op = "softmax_cross_entropy"
    if logits.ndim != 2:
        raise ConfigError(
            f"{op} expects logits of shape (N, K); received logits.shape={logits.shape}"
        )
    if logits.shape[1] == 0:
        raise ConfigError(f"{op} expects at least one class; received logits.shape={logits.shape}")
    if labels.shape != logits.shape[:1]:
        raise ConfigError(
            f"{op} expects labels of shape (N,)=({logits.shape[0]},) holding class indices; "
            f"received labels.shape={labels.shape}"
        )
    _floating(op, "logits", logits)
    if labels.dtype.kind not in "iu":
        raise ConfigError(
            f"{op} expects integer labels (class indices, not one-hot); "
            f"received labels.dtype={labels.dtype}"
        )


def label_range(n_classes: int, bad) -> ConfigError:
    """The error for a label outside ``[0, K)``; ``bad`` is the offending value."""
    return ConfigError(
        f"softmax_cross_entropy expects labels in [0, K)=[0, {n_classes}); received label {bad}"
    )


def label_flag(xp):
    """A flag on the device, int64 ``[found, label]``, where a GPU kernel records a label
    outside ``[0, K)`` instead of waiting for the GPU to say so; read it once per chunk with
    :func:`raise_for_label_flag` (host kernels raise at once and leave it alone)."""
    return xp.zeros(2, dtype=xp.int64)


def raise_for_label_flag(flag, n_classes: int) -> None:
    """Raise :func:`label_range` if ``flag`` (host values of :func:`label_flag`) is set."""
    if int(flag[0]):
        raise label_range(n_classes, int(flag[1]))


def dout(op: str, letters: str, dout_array, out_shape) -> None:
    """Raise unless a backward's ``dout`` has the forward output's shape (every backend)."""
    if dout_array.shape != out_shape:
        raise ConfigError(
            f"{op} backward expects dout of shape ({letters})={out_shape}, the forward "
            f"output's; received dout.shape={dout_array.shape}"
        )


def window(i: int, j: int, stride: int, oh: int, ow: int):
    """The slices picking, for kernel offset (i, j), the input pixel of every output pixel
    of a strided sliding window (used by the NumPy references of conv2d and max_pool2d)."""
    return (
        slice(None),
        slice(None),
        slice(i, i + stride * (oh - 1) + 1, stride),
        slice(j, j + stride * (ow - 1) + 1, stride),
    )
