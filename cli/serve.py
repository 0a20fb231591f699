"""``gpunn serve`` (a page where you draw a digit and watch every layer) and ``gpunn
export-web`` (the same page as one static file). The page and the server are
:mod:`gpunn.web`; this module picks the model, prints and waits."""

from __future__ import annotations

import click

from gpunn.cli.main import DATA_DIR_OPTION, UserError, check_writable, quiet_requested

DEFAULT_CACHE = "serve/3b1b-784-16-16-10.npz"  # under gpunn.data.cache_dir()
LOOPBACK = ("127.0.0.1", "localhost", "::1")

_model_argument = click.argument("model", required=False, type=click.Path(dir_okay=False))


def _page_bundle(model, data_dir):
    """(net, bundle) for MODEL, or for the default 3b1b network (trained once, cached)."""
    from pathlib import Path

    import gpunn
    from gpunn import web
    from gpunn.data import cache_dir, load_dataset
    from gpunn.errors import DataError

    quiet = quiet_requested()
    if model is None:
        cache = cache_dir() / DEFAULT_CACHE
        if not cache.is_file() and not quiet:
            click.echo(f"training 3Blue1Brown's 784-16-16-10 network once (30 epochs, about "
                       f"95%, seconds); it is kept in {cache}", err=True)

        def on_epoch(record):
            if quiet or record.get("epoch", 0) % 5:
                return
            accuracy = record.get("evaluation_accuracy")
            line = f"  epoch {record.get('epoch')}"
            click.echo(line + (f": {accuracy:.2%} validation" if accuracy is not None else ""),
                       err=True)

        net, _ = web.default_model(cache, lambda: load_dataset("mnist", data_dir,
                                                               progress=not quiet),
                                   on_epoch=on_epoch)
        name = "3Blue1Brown's 784-16-16-10"
    else:
        net = gpunn.load(model, backend="cpu")
        web.check_servable(net)
        name = f"{Path(model).name}: {web.describe(net)}"
    try:
        test = load_dataset("mnist", data_dir, download=model is None).test
        tests = web.mnist_sample(net, test)
    except DataError as exc:
        click.echo(f"gpunn: warning: no MNIST test images for the page ({exc}); its "
                   "test-image buttons are off", err=True)
        tests = None
    return net, web.model_bundle(net, name, tests)


@click.command()
@_model_argument
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on. Only this machine can reach 127.0.0.1; "
                   "0.0.0.0 lets any machine on the network use the page.")
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="The port to listen on. Default: a free one (printed).")
@click.option("--open", "open_browser", is_flag=True,
              help="Open the page in the default web browser.")
@DATA_DIR_OPTION
def serve(model, host, port, open_browser, data_dir):
    """A page where you draw a digit and watch every layer of MODEL (a file from gpunn
    train --save) think: the input the network sees, each layer's activations, the ten
    outputs. Without MODEL: 3Blue1Brown's 784-16-16-10 network, trained on first use and
    cached. Ctrl-C stops the server."""
    from gpunn import web

    net, bundle = _page_bundle(model, data_dir)
    try:
        server = web.make_server(net, web.render_page(bundle), host, port, bundle["name"])
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); try another "
                        "--port, or leave it out for a free one") from exc
    if host not in LOOPBACK:
        click.echo(f"gpunn: warning: listening on {host}: other machines can reach the page",
                   err=True)
    click.echo(f"serving {bundle['name']} at {server.url}  (Ctrl-C to stop)")
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()


@click.command("export-web")
@_model_argument
@click.option("-o", "--output", "directory", type=click.Path(file_okay=False), required=True,
              metavar="DIR",
              help="The folder to write index.html to (created if missing).")
@DATA_DIR_OPTION
def export_web(model, directory, data_dir):
    """Write the page of `gpunn serve` for MODEL as one static file, DIR/index.html, with the
    weights and a sample of MNIST test images inside: it works from file:// and from any
    static web host, with no gpunn behind it. Without MODEL: the default 3b1b network."""
    from gpunn import web

    check_writable(directory, "-o", directory=True)  # before any training or loading
    _, bundle = _page_bundle(model, data_dir)
    try:
        path = web.export_web(bundle, directory)
    except OSError as exc:
        raise UserError(f"could not write {directory}/index.html: {exc.strerror or exc}"
                        ) from exc
    size = path.stat().st_size
    click.echo(f"wrote {path} ({size / 1024:,.0f} kB): open it in a browser, or copy "
               f"{directory} to any static web host")
