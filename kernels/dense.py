"""dense_sgd, the NumPy reference: SGD over one chunk of examples, one mini-batch at a time.

The oracle for :mod:`gpunn.kernels.dense_numba` and the path taken on CuPy: it simply runs
the network's own :meth:`gpunn.network.Network.update_mini_batch` over the chunk's
mini-batches in order, so it supports every network that method supports (dropout included).

Interface (shared by ``dense_numba``)::

    dense_sgd.supports(net, dropout) -> bool
    state = dense_sgd.prepare(net, momentum)          # once per Network.sgd call
    dense_sgd.run(state, Xc, Yc, mini_batch_size, eta, lmbda, l1, n, momentum)

``Xc (c, n_in)`` holds the chunk's examples, already shuffled; ``Yc (c, n_out)`` their one-hot
targets; ``n`` is the training-set size (for the L2/L1 terms). The weights, biases and
``net.velocities`` are updated in place.
"""

from __future__ import annotations


class DenseSGDReference:
    """Mini-batch SGD through ``net.update_mini_batch`` (NumPy or CuPy, any dtype)."""

    backend = "numpy"

    def supports(self, net, dropout) -> bool:
        return True

    def prepare(self, net, momentum):
        """The state for :meth:`run`: the network itself, with its velocities when needed."""
        if momentum:
            net.init_velocities()
        return net

    def run(self, state, Xc, Yc, mini_batch_size, eta, lmbda, l1, n, momentum) -> None:
        """One SGD step per mini-batch of ``Xc (c, n_in)`` / ``Yc (c, n_out)``, in order."""
        net = state
        for k in range(0, Xc.shape[0], mini_batch_size):
            net.update_mini_batch(Xc[k:k + mini_batch_size], Yc[k:k + mini_batch_size],
                                  eta, lmbda, n, l1, momentum)


DENSE_SGD = DenseSGDReference()
