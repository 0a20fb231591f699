"""``gpunn baseline darkness`` and ``gpunn baseline svm``: chapter 1's non-neural baselines.

The classifiers are in :mod:`gpunn.demos.baselines`; this module loads the data and prints.
"""

from __future__ import annotations

import click

from gpunn.cli.train import _data_options, _load_data


@click.group()
def baseline():
    """How well MNIST is classified without a neural network (chapter 1)."""


@baseline.command()
@_data_options
def darkness(dataset, data_dir):
    """Average darkness: classify each test image as the digit whose training images'
    mean darkness (sum of pixels) is nearest its own. The book: 2,225/10,000 (22.25%)."""
    from gpunn.demos.baselines import darkness_accuracy

    data = _load_data(dataset, data_dir)
    r = darkness_accuracy(data.train, data.test)
    click.echo("average darkness per digit: "
               + "  ".join(f"{d}:{v:.1f}" for d, v in enumerate(r["averages"])))
    click.echo(f"test accuracy {r['accuracy']:.2%} ({r['correct']:,}/{r['total']:,}); "
               "book: 22.25% (2,225/10,000)")


@baseline.command()
@click.option("--train-size", type=click.IntRange(min=1), default=None,
              help="Train on the first N training images (default all 50,000: many minutes).")
@click.option("--test-size", type=click.IntRange(min=1), default=None,
              help="Score on the first N test images (default all 10,000).")
@click.option("--gamma", default="auto", show_default=True,
              help="RBF gamma: 'auto' (1/784, the book's scikit-learn default), 'scale' "
                   "(today's default) or a number.")
@_data_options
def svm(train_size, test_size, gamma, dataset, data_dir):
    """A support vector machine (scikit-learn SVC, RBF kernel, C = 1). The book, with all
    50,000 training images: 94.35%. Needs scikit-learn."""
    from gpunn.cli.main import UserError
    from gpunn.demos.baselines import require_sklearn, svm_accuracy

    require_sklearn()  # before loading (or downloading) the data
    if gamma not in ("auto", "scale"):
        try:
            gamma = float(gamma)
        except ValueError:
            raise UserError(f"--gamma must be auto, scale or a number; received {gamma!r}"
                            ) from None
    data = _load_data(dataset, data_dir)
    train_size = min(train_size or len(data.train), len(data.train))
    test_size = min(test_size or len(data.test), len(data.test))
    r = svm_accuracy(data.train, data.test, train_size=train_size, test_size=test_size,
                     gamma=gamma)
    click.echo(f"SVM (RBF, C=1, gamma={r['gamma']}) trained on {r['train_size']:,} images: "
               f"test accuracy {r['accuracy']:.2%} ({r['correct']:,}/{r['total']:,}); "
               "book: 94.35% with all 50,000 training images and gamma=auto")
