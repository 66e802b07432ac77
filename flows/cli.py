"""`nst`: stylize one pair, run a manifest through the Prefect flow, serve it on a schedule,
or draw a contact sheet.

Every StyleParams field is a flag (`--style-weight 1e4`, `--style-layers a,b`);
defaults live in nst_core/params.py alone.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
import time
from importlib import metadata
from typing import TYPE_CHECKING

from nst_core import runtime
from nst_core.params import SHEET_PARAMS, StyleParams, as_text

if TYPE_CHECKING:  # imported inside the commands, like every module they use
    from nst_core.storage import Storage

S3_HELP = "S3 (credentials come from the environment or an AWS profile, never from flags)"

# What a parameter's value is, in the help's placeholder, by the end of its name; others are a NUMBER.
VALUE_WORDS = (
    ("_layer_weights", "WEIGHTS"),
    ("_blend", "WEIGHTS"),
    ("_weight", "WEIGHT"),
    ("_layers", "LAYERS"),
    ("iterations", "STEPS"),
    ("patience", "STEPS"),
    ("scales", "PIXELS"),
    ("size", "PIXELS"),
    ("min_scale", "PIXELS"),
    ("style_scale", "FACTOR"),
    ("last_jump", "FACTOR"),
    ("strength", "FRACTION"),
    ("noise", "FRACTION"),
    ("decay", "FRACTION"),
    ("tolerance", "FRACTION"),
    ("learning_rate", "STEP"),
)

EXAMPLES = {  # three per command, shown under its help
    None: (
        "nst stylize cat.jpg starry_night.jpg -o cat_starry.png",
        "nst run manifests/example.csv -o out/example",
        "nst report out/example/results -o report.html",
    ),
    "stylize": (
        "nst stylize cat.jpg starry_night.jpg -o cat_starry.png",
        "nst stylize cat.jpg starry_night.jpg the_scream.jpg --style-blend 0.7,0.3 -o cat_blend.png",
        "nst stylize cat.jpg starry_night.jpg --size 1024 --strength 0.3 -o cat_light.jpg",
    ),
    "run": (
        "nst run manifests/example.csv -o out/example",
        "nst run photos.csv -o s3://my-bucket/painted --size 1024",
        'nst run photos.csv -o out --sweep "style_weight=100,300,1000"',
    ),
    "serve": (
        'nst serve photos.csv --cron "0 2 * * *" -o out',
        'nst serve photos.csv --cron "30 1 * * 1-5" --timezone Europe/Paris -o out',
        'nst serve s3://my-bucket/photos.csv --cron "0 3 * * *" -o s3://my-bucket/painted --name nightly-s3',
    ),
    "ui": ("nst ui", "nst ui --port 4300", "nst ui --host 0.0.0.0 --port 4200"),
    "grid": (
        "nst grid out/results -o grid.jpg",
        "nst grid out/results -o weights.jpg --cols style_weight --run all",
        'nst grid s3://my-bucket/painted/results -o grid.png --cell 128 --background "#202020"',
    ),
    "report": (
        "nst report out/results -o report.html",
        "nst report out/results -o everything.html --run all",
        "nst report out/results -o weights.html --rows content --cols style_weight",
    ),
    "curves": (
        "nst curves out/results -o out/curves",
        "nst curves out/results -o out/curves --run all",
        "nst curves s3://my-bucket/painted/results -o s3://my-bucket/painted/curves",
    ),
    "compact": (
        "nst compact out/example",
        "nst compact s3://my-bucket/painted",
        "nst compact out --results out/tables/nightly",
    ),
    "sheet": (
        "nst sheet photos/*.jpg --styles paintings/*.jpg -o sheet.jpg",
        "nst sheet cat.jpg dog.jpg --styles starry_night.jpg the_scream.jpg -o sheet.png --size 384",
        "nst sheet photos/*.jpg --styles paintings/*.jpg -o sheet.jpg --preserve-colors luminance",
    ),
}


class _Parser(argparse.ArgumentParser):
    """argparse, saying which flag a mistyped one was meant to be ("did you mean --style-weight?"):
    argparse's own suggest_on_error needs Python 3.14."""

    def parse_known_args(self, args=None, namespace=None):
        if not self._subparsers:  # a command's parser: every flag after the command is its own
            self._suggest_for_unknown_flags(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def _suggest_for_unknown_flags(self, args: list[str]) -> None:
        flags = [option for option in self._option_string_actions if option.startswith("--")]
        for arg in args:
            if arg == "--":
                break
            typed = arg.split("=", 1)[0]
            if typed.startswith("--") and not any(flag.startswith(typed) for flag in flags):  # prefixes are fine
                close = difflib.get_close_matches(typed, flags, n=1, cutoff=0.6)
                if close:
                    self.error(f"unrecognized argument {typed}: did you mean {close[0]}?")


def _metavar(spec) -> str:
    """What a parameter's value is: its choices, or a word for its kind (PIXELS, WEIGHT, LAYERS...)."""
    if spec.choices:
        return "{" + ",".join(spec.choices) + "}"
    return next((word for end, word in VALUE_WORDS if spec.name.endswith(end)), "NUMBER")


def add_param_flags(
    parser: argparse.ArgumentParser, defaults: StyleParams = StyleParams(), *, fast_only: bool = False
) -> None:
    """A flag per StyleParams field, its help the field's, its default as typed; `fast_only`: the fields
    the fast network uses (`param(..., fast=True)`), and no --weights (it needs no VGG)."""
    group = parser.add_argument_group(
        "how the picture is painted (also a manifest's columns; manifests/README.md says why each default)"
        if not fast_only
        else "how the preview is painted"
    )
    for spec in type(defaults).specs():
        if fast_only and not spec.fast:
            continue
        shown = as_text(getattr(defaults, spec.name))  # as typed: block4_conv2, 256,362
        shown = {"": "''", None: "none"}.get(shown, shown)
        help_text = f"{spec.help} (default: {shown})".replace("%", "%%")  # argparse formats help with %
        group.add_argument(
            f"--{spec.name.replace('_', '-')}", dest=spec.name, metavar=_metavar(spec), default=None, help=help_text
        )
    if fast_only:
        return
    group.add_argument(
        "--weights",
        metavar="FILE",
        help="the image network's weights: imagenet (downloaded once) or a .h5 file (default: $NST_WEIGHTS)",
    )


def _add_output_format_flag(parser: argparse.ArgumentParser, names: str) -> None:
    # How the output is written, not how it is made: not a StyleParams field, so no parameter hash changes.
    from nst_core.image_io import OUTPUT_FORMATS

    parser.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        help=f"16 bits per colour, smoother for print: {names} (default: 8 bits, by the file's extension); "
        "the photo's camera details (EXIF) are kept, except in TIFF",
    )


def _add_s3_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(S3_HELP)
    group.add_argument(
        "--s3-endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL"),
        metavar="URL",
        help="an S3-compatible service, e.g. http://minio:9000 (default: $AWS_ENDPOINT_URL, else AWS)",
    )
    group.add_argument("--s3-profile", default=None, metavar="NAME", help="the AWS profile whose credentials to use")
    group.add_argument("--s3-anon", action="store_true", help="read public buckets without credentials")


def param_overrides(args: argparse.Namespace) -> dict:
    """The parameter flags that were given, typed and each in its range; ValueError names every bad flag."""
    given, problems = {}, []
    for spec in StyleParams.specs():
        text = getattr(args, spec.name, None)  # sheet: fast fields only
        if text is None:
            continue
        flag = f"--{spec.name.replace('_', '-')} {text}"
        try:
            given[spec.name] = StyleParams.parse(spec.name, text)
        except ValueError as error:
            problems.append(f"{flag}: {error}")
            continue
        problem = spec.problem(given[spec.name])
        if problem:
            problems.append(f"{flag}: {problem}")
    if problems:
        raise ValueError("; ".join(problems))
    return given


def _run_value(kind: str):
    """An argparse `type` checking a run flag's value against its range in flows.parameters (`kind`:
    BatchSize, MemoryLimitGB, Workers); argparse's error names the flag."""

    def parse(text: str):
        from flows import parameters  # here, not at import: `nst --help` stays quick

        try:
            return parameters.run_value(getattr(parameters, kind), text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


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
    parser = _Parser(prog="nst", description="Paint photos in the style of paintings (neural style transfer).")
    parser.add_argument("--version", action="version", version=f"nst {metadata.version('nst-pipeline')}")
    commands = parser.add_subparsers(dest="command", required=True)

    one = commands.add_parser("stylize", help="paint one photo in the style of one painting, or of a blend")
    one.add_argument("content", metavar="photo", help="the photo (a file, or s3://bucket/key)")
    one.add_argument("styles", nargs="+", metavar="painting", help="the painting, or several to blend")
    one.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="where to save the picture: .png, .jpg, .webp or .tif"
    )
    one.add_argument(
        "--save-every", type=int, default=0, metavar="STEPS", help="also save the picture in progress every STEPS steps"
    )
    _add_output_format_flag(one, "png16 (a .png output) or tiff16 (.tif/.tiff)")
    add_param_flags(one)
    _add_s3_flags(one)

    many = commands.add_parser(
        "run", help="paint every photo x painting of a manifest, skipping those an earlier run finished"
    )
    _add_run_flags(many, since_last_default=False)
    many.add_argument(
        "--plan",
        action="store_true",
        help="say how many pairs there are to do, how long they will take on this machine and the memory each "
        "batch needs, then stop (writes nothing; measures this machine's speed once, about 20 s)",
    )

    serve = commands.add_parser("serve", help="run a manifest on a schedule, every night say (a Prefect deployment)")
    serve.add_argument(
        "--cron",
        required=True,
        metavar="SCHEDULE",
        help='when to run, in cron\'s words: "0 2 * * *" is 02:00 every day',
    )
    _add_run_flags(serve, since_last_default=True)
    serve.add_argument(
        "--timezone", default="UTC", metavar="ZONE", help="the schedule's time zone, e.g. Europe/Paris (default UTC)"
    )
    serve.add_argument("--name", default="nightly", help="the schedule's name in Prefect (default nightly)")
    _add_report_commands(commands)

    compact = commands.add_parser(
        "compact", help="merge the results table's small files into one per month (every row kept; runs merge too)"
    )
    compact.add_argument("out", metavar="OUT", help="the output folder of the runs, or s3://bucket/prefix")
    compact.add_argument("--results", metavar="TABLE", help="the results table, if not OUT/results")
    _add_s3_flags(compact)

    ui = commands.add_parser(
        "ui", help="a Prefect server that keeps every run's history, to watch runs in its UI (and to serve)"
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=4200, help="port (default 4200)")

    sheet = commands.add_parser(
        "sheet", help="a quick preview of every photo in every painting's style, in one picture"
    )
    sheet.add_argument("photos", nargs="+", metavar="photo", help="the photos, one row each")
    sheet.add_argument("--styles", nargs="+", required=True, metavar="PAINTING", help="the paintings, one column each")
    sheet.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the sheet: .png, or .jpg for very large sheets"
    )
    sheet.add_argument(
        "--cell", type=int, default=None, metavar="PIXELS", help="side of each picture in the sheet (default: --size)"
    )
    add_param_flags(sheet, SHEET_PARAMS, fast_only=True)
    _add_s3_flags(sheet)
    for name, command in commands.choices.items():
        _add_examples(command, name)
    _add_examples(parser, None)
    return parser


def _add_examples(parser: argparse.ArgumentParser, command: str | None) -> None:
    """The command's EXAMPLES under its help, as written; a command's usage names its required flags
    and arguments only, so an error's usage line stays short."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES.get(command, ()))
    if command is not None:
        formatter = parser._get_formatter()
        required = [
            f"{a.option_strings[0]} {formatter._format_args(a, a.dest.upper())}"
            for a in parser._actions
            if a.option_strings and a.required
        ]
        arguments = [formatter._format_args(a, a.dest) for a in parser._actions if not a.option_strings]
        parser.usage = " ".join(["%(prog)s", *required, "[options]", *arguments])


def _add_run_flags(parser: argparse.ArgumentParser, since_last_default: bool) -> None:
    """What `run` and `serve` share: the manifest, where outputs go, how pairs run, the parameters."""
    parser.add_argument(
        "manifest", help="a table (CSV) of photos, paintings and settings, a file or s3://... (manifests/README.md)"
    )
    parser.add_argument("-o", "--out", required=True, metavar="FOLDER", help="the output folder, or s3://bucket/prefix")
    parser.add_argument("--results", metavar="TABLE", help="where the results table goes (default: OUT/results)")
    parser.add_argument("--force", action="store_true", help="paint again the pairs an earlier run finished")
    parser.add_argument(
        "--since-last",
        action=argparse.BooleanOptionalAction,
        default=since_last_default,
        help="also skip pairs that failed before on files unchanged since (default: "
        f"{'on' if since_last_default else 'off'}); new and changed photos always run",
    )
    parser.add_argument(
        "--concurrency",
        type=_run_value("Workers"),
        default=1,
        metavar="N",
        help="how many pairs this process paints at once (default 1)",
    )
    parser.add_argument(
        "--task-runner",
        choices=("threads", "dask"),
        default="threads",
        help="paint in threads of this process (default), or on a Dask cluster of processes or machines",
    )
    parser.add_argument(
        "--dask-address",
        metavar="ADDRESS",
        help="the Dask cluster to use, e.g. tcp://host:8786 (default: start one on this machine)",
    )
    parser.add_argument(
        "--dask-workers",
        type=_run_value("Workers"),
        metavar="N",
        help="how many processes the Dask cluster started here has (default: one per GPU, else 1)",
    )
    parser.add_argument(
        "--memory-limit-gb",
        type=_run_value("MemoryLimitGB"),
        metavar="GB",
        help="memory the run may use: larger pictures are painted in tiles, and those too large even so fail "
        "(default: $NST_MEMORY_LIMIT_GB, else two thirds of this machine's)",
    )
    parser.add_argument(
        "--batch-size",
        type=_run_value("BatchSize"),
        metavar="N",
        help="how many pictures of one size are painted together (default 4, fewer when memory is short; "
        "1: one at a time)",
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="succeed when the manifest matches no images (default: an error naming its patterns)",
    )
    _add_output_format_flag(
        parser, "png16 (.png files) or tiff16 (files named .tif; a manifest's output column must say .tif)"
    )
    parser.add_argument(
        "--sweep",
        metavar="NAME=VALUES[;NAME=VALUES]",
        help='several values of one or two settings, e.g. "style_weight=100,300,1000", for rows without '
        "their own sweep",
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


RUN_HELP = "which run: its id, or all for every pair in the table (default: the latest run)"
RESULTS_HELP = "the results table (OUT/results), a folder or s3://..."


def _add_report_commands(commands) -> None:
    from nst_core.grid import GridOptions

    defaults = GridOptions()
    grid = commands.add_parser("grid", help="a picture of a run's outputs in rows and columns")
    grid.add_argument("results", help=RESULTS_HELP)
    grid.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the grid picture: .png, or .jpg for very large grids"
    )
    grid.add_argument(
        "--rows",
        default="content",
        metavar="AXIS",
        help="what goes down: content, style or a setting (default content)",
    )
    grid.add_argument(
        "--cols",
        default="style",
        metavar="AXIS",
        help="what goes across: content, style or a setting such as style_weight (default style)",
    )
    grid.add_argument("--run", metavar="RUN", help=RUN_HELP)
    grid.add_argument(
        "--cell",
        type=int,
        default=defaults.cell,
        metavar="PIXELS",
        help=f"side of each picture in the grid (default {defaults.cell})",
    )
    grid.add_argument(
        "--padding",
        type=int,
        default=defaults.padding,
        metavar="PIXELS",
        help=f"space between pictures (default {defaults.padding})",
    )
    grid.add_argument(
        "--font-size",
        type=int,
        default=defaults.font_size,
        metavar="PIXELS",
        help=f"height of the labels' letters (default {defaults.font_size})",
    )
    grid.add_argument(
        "--background", default="#ffffff", metavar="COLOUR", help="background colour, e.g. '#202020' (default white)"
    )
    _add_s3_flags(grid)

    report = commands.add_parser("report", help="one web page about a run: failures, grid, every pair's numbers")
    report.add_argument("results", help=RESULTS_HELP)
    report.add_argument("-o", "--output", required=True, metavar="FILE", help="the page, e.g. report.html")
    report.add_argument("--run", metavar="RUN", help=RUN_HELP)
    report.add_argument(
        "--rows", metavar="AXIS", help="what goes down the grid (default: content, or the swept settings)"
    )
    report.add_argument(
        "--cols", metavar="AXIS", help="what goes across the grid (default: style, or the swept setting)"
    )
    _add_s3_flags(report)

    curves = commands.add_parser("curves", help="how each finished picture of a run improved, step by step (PNG)")
    curves.add_argument("results", help=RESULTS_HELP)
    curves.add_argument(
        "-o", "--output", required=True, metavar="FOLDER", help="the folder for the {output name}.loss.png files"
    )
    curves.add_argument("--run", metavar="RUN", help=RUN_HELP)
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
    _check_image_output(args.output)  # before the network loads or a cell is drawn
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


def _check_image_output(uri: str, encoding: str | None = None) -> None:
    """Refuse, before any work, an output image that cannot be written as asked: no image extension,
    one `--output-format encoding` cannot write, or a folder there."""
    from nst_core.errors import ImageError
    from nst_core.image_io import encoding_problem, output_format

    output_format(uri)  # an ImageError naming the file when it has no image extension
    problem = encoding_problem(uri, encoding)
    if problem:
        raise ImageError(f"{uri}: {problem}")
    if "://" not in uri and os.path.isdir(uri):
        raise ImageError(f"{uri}: is a directory; name the output image file inside it")


def _check_folder_output(uri: str | None, flag: str) -> None:
    """Refuse, before any work, a local output folder that is a file."""
    if uri and "://" not in uri and os.path.exists(uri) and not os.path.isdir(uri):
        raise ValueError(f"{uri}: is a file; {flag} names a folder")


def _check_stylize_args(args: argparse.Namespace, params: StyleParams) -> None:
    """What `nst stylize` can refuse before reading an image or loading the network, as a manifest's rows are."""
    from flows.manifest import blend_problem

    _check_image_output(args.output, args.output_format)
    problem = blend_problem(params, len(args.styles))
    if problem:
        raise ValueError(f"--style-blend: {problem}; give one weight per style image")


def cmd_stylize(args: argparse.Namespace) -> int:
    params = StyleParams().replace(**param_overrides(args))
    _check_stylize_args(args, params)  # before any file is read, the backend imported or a bar drawn
    runtime.load()
    import numpy as np
    from tqdm import tqdm

    from flows.manifest import Pair, pair_id
    from flows.pairs import default_memory_limit_gb, load_pairs, stylize_and_save
    from nst_core.fast import check_installed
    from nst_core.image_io import save_image
    from nst_core.model import check_weights

    check_installed(params.method, params.init)
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


def _ledger(args: argparse.Namespace, storage: Storage):
    """The manifest's pairs sorted by the results table as the flow will sort them, read before the
    backend and Prefect start (tens of seconds); the manifest's warnings printed."""
    from flows.ledger import manifest_ledger
    from flows.results import results_location

    ledger, warnings = manifest_ledger(
        args.manifest,
        args.out,
        results_location(args.out, args.results),
        storage=storage,
        since_last=args.since_last,
        force=args.force,
        overrides=param_overrides(args),
        sweep=args.sweep,
        allow_empty=args.allow_empty,
        output_format=args.output_format,
    )
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return ledger


def _reported_nothing_to_do(args: argparse.Namespace, ledger) -> bool:
    """Whether every pair is done, which is then printed: a rerun with nothing to stylize ends here and
    writes nothing (unless rows spooled by an earlier run wait for the flow to deliver them)."""
    from flows.ledger import ledger_line
    from flows.results import results_location, spool_folder

    results = results_location(args.out, args.results)
    if ledger.todo or any(spool_folder(results).glob("part-*.parquet")):
        return False
    print(f"outputs: {args.out}\nresults: {results}  (pandas.read_parquet)")
    print(f"0 succeeded, {len(ledger.skipped)} skipped, 0 failed ({ledger_line(ledger.counts())}): nothing to stylize")
    return True


def _report_unreadable(pairs: list, storage: Storage) -> None:
    """Name at once, before Prefect starts, the files whose pairs will fail (their headers read; the
    flow checks again, and records those pairs as failed without running them)."""
    from flows.manifest import unreadable_files

    problems = unreadable_files(pairs, storage)
    if problems:
        print(f"nst: {len(problems)} file(s) cannot be stylized; their pairs will fail:", file=sys.stderr)
        for reason in sorted(problems.values()):
            print(f"  {reason}", file=sys.stderr)  # each names its file


def _print_plan(args: argparse.Namespace, ledger, storage: Storage) -> int:
    """`run --plan`: the manifest's pairs as the run would sort and batch them, with their time and memory."""
    from flows.ledger import ledger_line

    pairs = len(ledger.todo) + len(ledger.skipped)
    print(f"{args.manifest}: {pairs} pairs: {ledger_line(ledger.counts())}; {len(ledger.todo)} to stylize")
    if not ledger.todo:
        return 0
    runtime.load()  # before anything imports the backend: it hides the backend's start-up banner
    from flows.pairs import BATCH_SIZE, default_memory_limit_gb
    from flows.plan import plan_lines, plan_night
    from nst_core import speed
    from nst_core.model import check_weights
    from nst_core.settings import settings

    check_weights(args.weights, param_overrides(args).get("arch", "auto"))
    machine = speed.cached(settings().speed_cache, args.weights, ledger.todo[0].params)
    limit = args.memory_limit_gb or default_memory_limit_gb()
    plan = plan_night(ledger.todo, storage, args.batch_size or BATCH_SIZE, limit, machine)
    print("\n".join(plan_lines(plan, limit)))
    print(f"speed: {machine.machine}, measured {time.strftime('%Y-%m-%d', time.localtime(machine.measured_at))}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from flows.lock import check_free
    from flows.results import results_location

    # Reject a bad manifest or a table in use here, in one message, before Prefect starts (tens of seconds).
    _check_folder_output(args.out, "--out")
    _check_folder_output(args.results, "--results")
    storage = storage_from(args)
    _validate_manifest(args, storage)
    ledger = _ledger(args, storage)
    if args.plan:
        return _print_plan(args, ledger, storage)
    check_free(results_location(args.out, args.results), storage)
    if _reported_nothing_to_do(args, ledger):
        return 0
    _report_unreadable(ledger.todo, storage)
    runtime.load()
    from nst_core.model import check_weights

    check_weights(args.weights, param_overrides(args).get("arch", "auto"))
    from tqdm.contrib.logging import logging_redirect_tqdm

    from flows.ledger import ledger_line
    from flows.pipeline import PairsFailedError, RunInterruptedError, run_manifest
    from flows.server import temporary_server

    _console_without_tracebacks()
    try:
        # In its own session, and dies with this process; log lines print above the bar, not into it.
        with temporary_server(), logging_redirect_tqdm():
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
    from prefect.settings import PREFECT_API_URL

    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {args.timezone!r}; use a name like Europe/Paris or UTC") from None
    schedule = Cron(args.cron, timezone=args.timezone)  # ValueError for a bad cron string
    _check_folder_output(args.out, "--out")
    _check_folder_output(args.results, "--results")
    if not PREFECT_API_URL.value():  # Prefect's own temporary server would take the deployment and never run it
        raise RuntimeError(
            "serve needs a Prefect server that keeps running to fire its schedule: start one with `nst ui` "
            "in another terminal, then run PREFECT_API_URL=http://127.0.0.1:4200/api nst serve ..."
        )
    runtime.load()
    from flows.pipeline import configured_flow
    from nst_core.model import check_weights
    from nst_core.storage import absolute

    # A deployment's runs need not start in this folder.
    args.manifest, args.out, args.results = absolute(args.manifest), absolute(args.out), absolute(args.results)
    storage = storage_from(args)
    _validate_manifest(args, storage)
    check_weights(args.weights, param_overrides(args).get("arch", "auto"))
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


def cmd_ui(args: argparse.Namespace) -> int:
    from flows.server import lasting_server

    return lasting_server(args.host, args.port)


def cmd_grid(args: argparse.Namespace) -> int:
    import time

    from PIL import ImageColor

    from flows.grids import grid_from_results
    from nst_core.grid import GridOptions

    _check_image_output(args.output)
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

    if not args.output.lower().endswith((".html", ".htm")):
        raise ValueError(f"{args.output}: a report is a web page; name it .html")
    report = report_from_results(
        args.results, args.output, run=args.run, rows=args.rows, cols=args.cols, storage=storage_from(args)
    )
    print(f"{args.output}: run {report.run}, {report.pairs} pairs, {report.failed} failed")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from flows.lock import run_lock
    from flows.results import compact_results, results_location

    _check_folder_output(args.out, "OUT")
    storage = storage_from(args)
    results = results_location(args.out, args.results)
    if not storage.exists(results):
        raise ValueError(f"{results}: no results table there")
    # Under the run lock, as a run: a run started meanwhile is refused, naming this compaction.
    with run_lock(results, datetime.now(timezone.utc).strftime("compact-%Y%m%dT%H%M%S"), storage):
        for done in compact_results(results, storage=storage):
            print(f"{done.folder}: {done.before} files -> {done.after} ({done.rows} rows merged)")
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from flows.grids import run_pairs
    from flows.report import write_loss_curves

    _check_folder_output(args.output, "-o")
    storage = storage_from(args)
    pairs, run = run_pairs(args.results, args.run, storage)
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


def _api_error_line(error: Exception) -> str | None:
    """An error answer or no answer from the Prefect API, in one line; None for any other error."""
    import httpx

    if isinstance(error, httpx.HTTPStatusError):
        answer = error.response
        return (
            f"the Prefect API at {answer.request.url.copy_with(query=None)} answered {answer.status_code} "
            f"{answer.reason_phrase}: its server is overloaded or failing; try again once it answers"
        )
    if isinstance(error, httpx.HTTPError):
        return f"the Prefect API could not be reached ({type(error).__name__}: {error}); try again once it answers"
    return None


def main(argv: list[str] | None = None) -> int:
    # Prefect's first import in a terminal prints a usage-data notice; nst reports no usage unless asked.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    args = build_parser().parse_args(argv)
    commands = {
        "stylize": cmd_stylize,
        "run": cmd_run,
        "serve": cmd_serve,
        "ui": cmd_ui,
        "grid": cmd_grid,
        "report": cmd_report,
        "curves": cmd_curves,
        "compact": cmd_compact,
        "sheet": cmd_sheet,
    }
    try:
        return commands[args.command](args)
    except (ValueError, RuntimeError, OSError) as error:  # bad input: one line, no traceback
        print(f"nst: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        line = _api_error_line(error)
        if line is None:
            raise
        print(f"nst: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
