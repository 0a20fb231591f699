"""The book's demonstrations, as functions that return numbers (the CLI prints them).

- :mod:`gpunn.demos.approx`: chapter 4's visual proof that one hidden layer can approximate
  any continuous function (bumps built from pairs of step neurons), beside a net trained by SGD.
- :mod:`gpunn.demos.vanishing`: chapter 5's unstable gradients, the speed of learning
  ‖δ^l‖ of each hidden layer.
- :mod:`gpunn.demos.baselines`: chapter 1's baselines, average darkness and a support vector
  machine (scikit-learn, optional).

Plots live in :mod:`gpunn.plots`; nothing here imports matplotlib.
"""
