"""``gpunn data``: fetch and describe datasets (placeholder until gpunn.data lands)."""

import click


@click.group()
def data():
    """Fetch datasets and show where they are."""
