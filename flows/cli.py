"""`nst`: stylize one pair, run a manifest through the Prefect flow, serve it on a schedule,
or draw a contact sheet.

Every StyleParams field is a flag (`--style-weight 1e4`, `--style-layers a,b`);
defaults live in nst_core/params.py alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from nst_core import runtime
from nst_core.params import SHEET_PARAMS, StyleParams, as_text

if TYPE_CHECKING:  # imported inside the commands, like every module they use
    from nst_core.storage import Storage

S3_HELP = "S3: credentials come from the environment or the profile, never from flags"


def add_param_flags(
    parser: argparse.ArgumentParser, defaults: StyleParams = StyleParams(), *, fast_only: bool = False
) -> None:
    """A flag per StyleParams field, its help the field's, its default as typed; `fast_only`: the fields
    the fast network uses (`param(..., fast=True)`), and no --weights (it needs no VGG)."""
    group = parser.add_argument_group(
        "stylization parameters (declared in nst_core/params.py)" + (" that the fast network uses" if fast_only else "")
    )
    for spec in type(defaults).specs():
        if fast_only and not spec.fast:
            continue
        metavar = "{" + ",".join(spec.choices) + "}" if spec.choices else "V"
        shown = as_text(getattr(defaults, spec.name))  # as typed: block4_conv2, 256,362
        shown = {"": "''", None: "none"}.get(shown, shown)
        help_text = f"default: {shown}; {spec.help}".replace("%", "%%")  # argparse formats help with %
        group.add_argument(
            f"--{spec.name.replace('_', '-')}", dest=spec.name, metavar=metavar, default=None, help=help_text
        )
    if fast_only:
        return
    group.add_argument("--weights", help="VGG weights: 'imagenet' (download) or a .h5 file; default $NST_WEIGHTS")


def _add_output_format_flag(parser: argparse.ArgumentParser, names: str) -> None:
    # How the output is written, not how it is made: not a StyleParams field, so no parameter hash changes.
    from nst_core.image_io import OUTPUT_FORMATS

    parser.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        help=f"16 bits per channel: {names}; "
        "default: 8-bit, by the output's extension; the photo's EXIF is kept (not in TIFF)",
    )


def _add_s3_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(S3_HELP)
    group.add_argument(
        "--s3-endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL"),
        metavar="URL",
        help="an S3-compatible endpoint, e.g. http://minio:9000 (default: $AWS_ENDPOINT_URL, else AWS)",
    )
    group.add_argument("--s3-profile", default=None, metavar="NAME", help="the AWS profile to take credentials from")
    group.add_argument("--s3-anon", action="store_true", help="read public buckets without credentials")


def param_overrides(args: argparse.Namespace) -> dict:
    """The parameter flags that were given, typed; ValueError names the flag."""
    return {
        name: StyleParams.parse(name, getattr(args, name))
        for name in StyleParams.field_names()
        if getattr(args, name, None) is not None  # sheet: fast fields only
    }


def storage_from(args: argparse.Namespace) -> Storage:
    """The Storage the S3 flags describe: what every command reads and writes through."""
    from nst_core.storage import Storage

    options = {}
    if args.s3_endpoint_url:
        options["endpoint_url"] = args.s3_endpoint_url
    if args.s3_profile:
        options["profile"] = args.s3_profile
    if args.s3_anon:
        options["anon"] = True
    return Storage(options or None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nst", description="Batch neural style transfer (Gatys et al. 2016).")
    commands = parser.add_subparsers(dest="command", required=True)

    one = commands.add_parser("stylize", help="stylize one content image")
    one.add_argument("content", help="the photo (local or s3://)")
    one.add_argument("styles", nargs="+", metavar="style", help="one or more style images (blended)")
    one.add_argument("-o", "--output", required=True, help="the stylized image: .png .jpg .webp .tif (local or s3://)")
    one.add_argument("--save-every", type=int, default=0, metavar="N", help="also save the image every N steps")
    _add_output_format_flag(one, "png16 (a .png output) or tiff16 (.tif/.tiff)")
    add_param_flags(one)
    _add_s3_flags(one)

    many = commands.add_parser("run", help="stylize every pair of a manifest (Prefect flow)")
    _add_run_flags(many, since_last_default=False)

    serve = commands.add_parser("serve", help="serve a manifest's run as a Prefect deployment on a cron schedule")
    _add_run_flags(serve, since_last_default=True)
    serve.add_argument("--cron", required=True, help='when to run, e.g. "0 2 * * *" (02:00 every day)')
    serve.add_argument("--timezone", default="UTC", help="of the cron schedule, e.g. Europe/Paris (default UTC)")
    serve.add_argument("--name", default="nightly", help="deployment name (default nightly)")
    _add_report_commands(commands)

    sheet = commands.add_parser("sheet", help="every photo x every style with the fast network, in one picture")
    sheet.add_argument("photos", nargs="+", metavar="photo", help="the photos, one row each")
    sheet.add_argument("--styles", nargs="+", required=True, metavar="style", help="the paintings, one column each")
    sheet.add_argument("-o", "--output", required=True, help="the sheet: .png, or .jpg for very large sheets")
    sheet.add_argument("--cell", type=int, default=None, metavar="N", help="cell side in the sheet (default: --size)")
    add_param_flags(sheet, SHEET_PARAMS, fast_only=True)
    _add_s3_flags(sheet)
    return parser


def _add_run_flags(parser: argparse.ArgumentParser, since_last_default: bool) -> None:
    """What `run` and `serve` share: the manifest, where outputs go, how pairs run, the parameters."""
    parser.add_argument("manifest", help="CSV of photos x paintings x parameters, local or s3:// (manifests/README.md)")
    parser.add_argument("--out", required=True, help="output root: a folder or s3://bucket/prefix")
    parser.add_argument("--results", help="results table (default OUT/results)")
    parser.add_argument("--force", action="store_true", help="redo pairs a previous run finished")
    parser.add_argument(
        "--since-last",
        action=argparse.BooleanOptionalAction,
        default=since_last_default,
        help="also skip pairs that failed on bad input unchanged since (default: "
        f"{'on' if since_last_default else 'off'}); new and changed photos always run",
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, metavar="N", help="threads: pairs stylized at once (default 1)"
    )
    parser.add_argument(
        "--task-runner",
        choices=("threads", "dask"),
        default="threads",
        help="threads in this process (default), or a Dask cluster",
    )
    parser.add_argument("--dask-address", help="Dask scheduler, e.g. tcp://host:8786 (default: a local cluster)")
    parser.add_argument(
        "--dask-workers",
        type=int,
        metavar="N",
        help="local Dask cluster: worker processes (default: one per GPU, else 1)",
    )
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        metavar="GB",
        help="fill batches up to it, run pairs too "
        "large for one pass in tiles, refuse those too large even so (default: $NST_MEMORY_LIMIT_GB "
        "or two thirds of RAM)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="pairs of one size optimised together (default: "
        "flows.pipeline.BATCH_SIZE, 4; fewer when memory is short; 1: one at a time)",
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="a manifest matching no images succeeds (default: an error naming its patterns)",
    )
    _add_output_format_flag(
        parser, "png16 (.png outputs) or tiff16 (outputs named .tif; a manifest's `output` cell must match)"
    )
    parser.add_argument(
        "--sweep",
        metavar="NAME=V1,V2[;NAME=...]",
        help="several values of one or two parameters, for rows without a sweep cell (manifests/README.md)",
    )
    add_param_flags(parser)
    _add_s3_flags(parser)


def flow_parameters(args: argparse.Namespace, storage: Storage) -> dict:
    """The flow's parameters from `run`/`serve` flags (a deployment stores them as its parameters): each
    parameter of stylize_manifest from the flag of its name, or built from several flags."""
    import inspect

    from flows.pipeline import stylize_manifest

    built = {"overrides": param_overrides(args), "storage_options": storage.options}
    names = inspect.signature(stylize_manifest.fn).parameters
    return {
        name: built[name] if name in built else getattr(args, name)
        for name in names
        if name in built or hasattr(args, name)
    }


def runner_options(args: argparse.Namespace) -> dict:
    return {
        "concurrency": args.concurrency,
        "task_runner": args.task_runner,
        "dask_address": args.dask_address,
        "dask_workers": args.dask_workers,
    }


RUN_HELP = "RUN_ID, or 'all' for every pair in the table (default: the latest run)"


def _add_report_commands(commands) -> None:
    from nst_core.grid import GridOptions

    defaults = GridOptions()
    grid = commands.add_parser("grid", help="a picture grid of outputs from a results table")
    grid.add_argument("results", help="results table (OUT/results), local or s3://")
    grid.add_argument("-o", "--output", required=True, help="grid image: .png, or .jpg for very large grids")
    grid.add_argument("--rows", default="content", help="content, style or a parameter (default content)")
    grid.add_argument(
        "--cols", default="style", help="content, style or a parameter, e.g. style_weight (default style)"
    )
    grid.add_argument("--run", help=RUN_HELP)
    grid.add_argument(
        "--cell", type=int, default=defaults.cell, help=f"thumbnail size in pixels (default {defaults.cell})"
    )
    grid.add_argument(
        "--padding", type=int, default=defaults.padding, help=f"pixels between cells (default {defaults.padding})"
    )
    grid.add_argument(
        "--font-size", type=int, default=defaults.font_size, help=f"label size (default {defaults.font_size})"
    )
    grid.add_argument("--background", default="#ffffff", help="background colour, e.g. '#202020' (default white)")
    _add_s3_flags(grid)

    report = commands.add_parser("report", help="one self-contained HTML page about a run")
    report.add_argument("results", help="results table (OUT/results), local or s3://")
    report.add_argument("-o", "--output", required=True, help="the page, e.g. report.html (local or s3://)")
    report.add_argument("--run", help=RUN_HELP)
    report.add_argument("--rows", help="grid rows (default: content, or the swept parameters)")
    report.add_argument("--cols", help="grid columns (default: style, or the swept parameter)")
    _add_s3_flags(report)

    curves = commands.add_parser("curves", help="loss curves (PNG) of every finished pair of a run")
    curves.add_argument("results", help="results table (OUT/results), local or s3://")
    curves.add_argument("-o", "--output", required=True, help="folder for the {output name}.loss.png files")
    curves.add_argument("--run", help=RUN_HELP)
    _add_s3_flags(curves)


def _intermediate_uri(output: str, scale: int, iteration: int) -> str:
    stem, dot, ext = output.rpartition(".")
    return f"{stem}.scale{scale}.iter{iteration:05d}.{ext}" if dot else f"{output}.scale{scale}.iter{iteration:05d}"


def _labelled_images(uris: list[str], max_side: int, storage: Storage) -> list[tuple[str, object]]:
    """(file name, image) per URI; an unreadable file keeps its place with the reason, printed once."""
    from nst_core.errors import ImageError
    from nst_core.image_io import load_image

    loaded = []
    for uri in uris:
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        try:
            loaded.append((name, load_image(uri, storage, max_side=max_side)))
        except (ImageError, OSError) as error:
            print(f"nst: {error}", file=sys.stderr)
            loaded.append((name, str(error)))
    return loaded


def cmd_sheet(args: argparse.Namespace) -> int:
    runtime.load()
    from tqdm import tqdm

    from flows.grids import write_picture
    from nst_core.fast import check_installed
    from nst_core.grid import GridOptions
    from nst_core.sheet import contact_sheet
    from nst_core.targets import style_load_side

    params = SHEET_PARAMS.replace(**{**param_overrides(args), "method": "fast"})
    check_installed(params.method, params.init)  # before any file is read or bar drawn
    storage = storage_from(args)
    photos = _labelled_images(args.photos, params.size, storage)
    styles = _labelled_images(args.styles, style_load_side(params.size, params), storage)
    with tqdm(total=len(photos) * len(styles), unit="cell", dynamic_ncols=True) as bar:
        sheet = contact_sheet(photos, styles, params, GridOptions(cell=args.cell or params.size), on_cell=bar.update)
    write_picture(sheet, args.output, storage)
    print(f"{args.output}: {len(photos)} photos x {len(styles)} styles, {sheet.width} x {sheet.height} px")
    return 0


def _check_stylize_args(args: argparse.Namespace, params: StyleParams) -> None:
    """What `nst stylize` can refuse before reading an image or loading the network, as a manifest's rows are."""
    from flows.manifest import blend_problem
    from nst_core.errors import ImageError
    from nst_core.fast import check_installed
    from nst_core.image_io import encoding_problem, output_format

    check_installed(params.method, params.init)
    output_format(args.output)  # an ImageError naming the file when it has no image extension
    problem = encoding_problem(args.output, args.output_format)
    if problem:
        raise ImageError(f"{args.output}: {problem}")
    if "://" not in args.output and os.path.isdir(args.output):
        raise ImageError(f"{args.output}: is a directory; name the output image file inside it")
    problem = blend_problem(params, len(args.styles))
    if problem:
        raise ValueError(f"--style-blend: {problem}; give one weight per style image")


def cmd_stylize(args: argparse.Namespace) -> int:
    runtime.load()
    import numpy as np
    from tqdm import tqdm

    from flows.manifest import Pair, pair_id
    from flows.pairs import default_memory_limit_gb, load_pairs, stylize_and_save
    from nst_core.image_io import save_image
    from nst_core.model import check_weights

    params = StyleParams().replace(**param_overrides(args))
    _check_stylize_args(args, params)  # before any file is read, the network loaded or a bar drawn
    storage = storage_from(args)
    styles = tuple(args.styles)
    pair = Pair(1, args.content, styles, params, pair_id(args.content, styles, params), args.output)
    limit = default_memory_limit_gb()
    loaded = load_pairs([pair], storage, limit, _raise)
    check_weights(args.weights, params.arch)  # after the inputs' checks: each names its own file
    bar = tqdm(total=params.steps(), unit="step", dynamic_ncols=True, disable=params.method == "fast")  # fast: none

    def on_step(_, scale, side, progress, image):
        bar.update(1)
        bar.set_postfix_str(
            f"{side}px loss {progress.total:.4g} content {progress.content:.3g} "
            f"style {progress.style:.3g} tv {progress.tv:.3g}"
        )
        if args.save_every and progress.iteration % args.save_every == 0:
            save_image(np.asarray(image), _intermediate_uri(args.output, side, progress.iteration), storage)

    ((_, result, _),) = stylize_and_save(
        loaded,
        storage,
        weights=args.weights,
        memory_limit_gb=limit,
        output_format=args.output_format,
        on_step=on_step,
        on_error=_raise,
    )
    bar.close()
    print(
        f"{args.output}: {result.iterations} steps, loss {result.total_loss:.4g} "
        f"(content {result.content_loss:.3g}, style {result.style_loss:.3g}), {result.optimize_seconds:.1f} s"
    )
    return 0


def _raise(_, error: Exception):
    """`nst stylize`'s one pair: its error is the command's."""
    raise error


def _validate_manifest(args: argparse.Namespace, storage: Storage) -> None:
    """`run`'s and `serve`'s manifest with their flags: every bad row in one message, before Prefect starts."""
    from flows.manifest import validate_manifest

    validate_manifest(
        args.manifest,
        overrides=param_overrides(args),
        storage=storage,
        sweep=args.sweep,
        output_format=args.output_format,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from flows.lock import check_free
    from flows.results import results_location

    # Reject a bad manifest or a table in use here, in one message, before Prefect starts (tens of seconds).
    storage = storage_from(args)
    _validate_manifest(args, storage)
    check_free(results_location(args.out, args.results), storage)
    runtime.load()
    from nst_core.model import check_weights

    check_weights(args.weights, param_overrides(args).get("arch", "auto"))
    from flows.pipeline import PairsFailedError, RunInterruptedError, ledger_line, run_manifest
    from flows.server import temporary_server

    _console_without_tracebacks()
    try:
        with temporary_server():  # in its own session, and dies with this process
            outcome = run_manifest(**flow_parameters(args, storage), **runner_options(args), progress=True)
    except PairsFailedError as error:
        print(f"nst: {error}", file=sys.stderr)
        return 1
    except RunInterruptedError as error:
        print(f"nst: {error}", file=sys.stderr)
        return 130
    print(f"outputs: {args.out}\nresults: {outcome['results']}  (pandas.read_parquet)")
    if outcome["report"]:  # None when it could not be written (the run's log says why)
        print(f"report:  {outcome['report']}")
    print(
        f"{outcome['succeeded']} succeeded, {outcome['skipped']} skipped, {outcome['failed']} failed "
        f"({ledger_line(outcome)})"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    runtime.load()
    from flows.pipeline import configured_flow
    from nst_core.model import check_weights

    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {args.timezone!r}; use a name like Europe/Paris or UTC") from None
    from nst_core.storage import absolute

    # A deployment's runs need not start in this folder.
    args.manifest, args.out, args.results = absolute(args.manifest), absolute(args.out), absolute(args.results)
    storage = storage_from(args)
    _validate_manifest(args, storage)
    check_weights(args.weights, param_overrides(args).get("arch", "auto"))
    schedule = Cron(args.cron, timezone=args.timezone)  # ValueError for a bad cron string
    flow = configured_flow(**runner_options(args))
    print(f"serving deployment stylize-manifest/{args.name}: {args.cron} ({args.timezone}); Ctrl-C stops it")
    # A night that outlasts 24 h must not overlap the next: that one waits its turn (ENQUEUE),
    # rather than fighting over the results table's lock and exiting with an error.
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    flow.serve(
        name=args.name,
        schedules=[schedule],
        parameters=flow_parameters(args, storage),
        global_limit=one_at_a_time,
        print_starting_message=False,
    )
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    import time

    from PIL import ImageColor

    from flows.grids import grid_from_results
    from nst_core.grid import GridOptions

    started = time.perf_counter()
    options = GridOptions(
        cell=args.cell,
        padding=args.padding,
        font_size=args.font_size,
        background=ImageColor.getrgb(args.background)[:3],
    )
    grid = grid_from_results(
        args.results,
        args.output,
        rows=args.rows,
        cols=args.cols,
        run=args.run,
        options=options,
        storage=storage_from(args),
    )
    for note in grid.notes:
        print(f"note: {note}", file=sys.stderr)
    width, height = grid.image.size
    print(f"{args.output}: {width} x {height} px in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from flows.report import report_from_results

    report = report_from_results(
        args.results, args.output, run=args.run, rows=args.rows, cols=args.cols, storage=storage_from(args)
    )
    print(f"{args.output}: run {report.run}, {report.pairs} pairs, {report.failed} failed")
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from flows.grids import select_pairs
    from flows.report import write_loss_curves
    from flows.results import read_results

    storage = storage_from(args)
    pairs, run = select_pairs(read_results(args.results, storage=storage), args.run)
    written = write_loss_curves(pairs, args.output, storage)
    print(f"{len(written)} loss-curve plots of run {run} in {args.output}")
    return 0


class _MessageOnly(logging.Formatter):
    """Formats as `inner` does, without the exception's traceback (Prefect's API log keeps it)."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None})
        return self.inner.format(bare)


def _console_without_tracebacks() -> None:
    """A failed run's traceback on the terminal only hides the one-line `nst:` message that follows
    it: Prefect's console handlers print messages alone, its API log keeps the tracebacks."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]
    for handler in {h for logger in loggers for h in getattr(logger, "handlers", [])}:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, _MessageOnly):
            handler.setFormatter(_MessageOnly(handler.formatter))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "stylize": cmd_stylize,
        "run": cmd_run,
        "serve": cmd_serve,
        "grid": cmd_grid,
        "report": cmd_report,
        "curves": cmd_curves,
        "sheet": cmd_sheet,
    }
    try:
        return commands[args.command](args)
    except (ValueError, RuntimeError, OSError) as error:  # bad input: one line, no traceback
        print(f"nst: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
