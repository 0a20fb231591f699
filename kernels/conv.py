"""conv2d, the NumPy reference: the oracle every other implementation is tested against.

A 2-D convolution (cross-correlation, as in the book and every framework) of a mini-batch
``x (N, C, H, W)`` with filters ``w (F, C, KH, KW)`` and biases ``b (F,)``, with a stride and
zero padding on all four sides; the output is ``(N, F, OH, OW)`` with
``OH = (H + 2*padding - KH) // stride + 1`` (likewise ``OW``).

Written for reading, not speed: one term of the sum per kernel offset ``(i, j)``, each a
strided view of the padded input contracted with ``w[:, :, i, j]``. It uses only ``xp``
operations, so it runs on CuPy arrays too. Groups and dilation are left out.

Interface (shared by ``conv_numba`` and ``conv_cupy``)::

    out, cache = conv2d.forward(x, w, b, stride=1, padding=0)
    dx, dw, db = conv2d.backward(dout, cache)     # dout (N, F, OH, OW); dx None if need_dx=False
"""

from __future__ import annotations

from gpunn.backend import array_module
from gpunn.kernels import checks


def check_dout(dout, out_shape) -> None:
    """Raise unless ``dout`` has the shape of the forward output (shared by all backends)."""
    checks.dout("conv2d", "N, F, OH, OW", dout, out_shape)


class Conv2dReference:
    """conv2d in plain ``xp`` operations (NumPy or CuPy)."""

    backend = "numpy"

    def forward(self, x, w, b, stride: int = 1, padding: int = 0):
        """``x (N, C, H, W)``, ``w (F, C, KH, KW)``, ``b (F,)`` -> ``(out (N, F, OH, OW), cache)``.

        Computes the convolution with ``stride`` and zero ``padding`` on all four sides.
        """
        oh, ow = checks.conv2d(x, w, b, stride, padding)
        xp = array_module(x, w, b)
        p = padding
        x_pad = xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        out = xp.zeros((x.shape[0], w.shape[0], oh, ow), dtype=x.dtype)
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                patch = x_pad[checks.window(i, j, stride, oh, ow)]  # (N, C, OH, OW)
                out += xp.einsum("nchw,fc->nfhw", patch, w[:, :, i, j])
        out += b[None, :, None, None]
        return out, (x_pad, w, stride, padding, x.shape, out.shape)

    def backward(self, dout, cache, need_dx: bool = True):
        """``dout (N, F, OH, OW)`` -> ``(dx (N, C, H, W) or None, dw (F, C, KH, KW), db (F,))``."""
        x_pad, w, stride, padding, x_shape, out_shape = cache
        check_dout(dout, out_shape)
        xp = array_module(dout)
        oh, ow = out_shape[2:]
        db = dout.sum(axis=(0, 2, 3))
        dw = xp.zeros_like(w)
        dx_pad = xp.zeros_like(x_pad) if need_dx else None
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                window = checks.window(i, j, stride, oh, ow)
                dw[:, :, i, j] = xp.einsum("nfhw,nchw->fc", dout, x_pad[window])
                if need_dx:
                    # Within one offset the strided positions are distinct, so += is exact.
                    dx_pad[window] += xp.einsum("nfhw,fc->nchw", dout, w[:, :, i, j])
        dx = None
        if need_dx:
            h, wd = x_shape[2:]
            dx = xp.ascontiguousarray(dx_pad[:, :, padding : padding + h, padding : padding + wd])
        return dx, dw, db


conv2d = Conv2dReference()
