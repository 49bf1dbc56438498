"""``nbtl-recommend``: a thin command line over :func:`recommender.recommend`."""

from __future__ import annotations

import json
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

import heuristics
from recommender import report
from recommender.config import (
    SCRATCH_EPOCHS,
    VALIDATE_MEASURED,
    Options,
    ValidationOptions,
    check_device,
)
from recommender.errors import EXIT_USAGE, NbtlError, NbtlWarning, UsageError

_OPTIONS = Options()  # the defaults, shown in --help
_VALIDATION = ValidationOptions()

app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class Role(str, Enum):
    """``--role``: the main process of a search, or a worker that only runs trials."""

    main = "main"
    worker = "worker"


class RankBy(str, Enum):
    """``--rank-by``: :data:`recommender.ranking.CRITERIA`."""

    logme = "logme"
    linear_probe = "linear_probe"
    knn = "knn"
    h_score = "h_score"


class Emit(str, Enum):
    """``--emit``: the recommendation as input for the user's own trainer
    (:data:`recommender.export.EMIT_KINDS`)."""

    timm = "timm"
    torch = "torch"


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def recommend_command(
    path: Annotated[Path | None, typer.Argument(
        help="Dataset folder: one sub-folder per class (ImageFolder), or the root that "
             "--labels paths are relative to.", show_default=False)] = None,
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="CSV with columns path,label (paths relative to PATH).")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="timm model name; pre-trained weights from your hub or cache "
                        "(default: embedded tf_efficientnet_lite0 ImageNet weights; "
                        "tf_efficientnet_lite1/2 load offline from their packages). Repeat it "
                        "(or give a comma list) to rank several models on the same images.")]
        = None,
    weights: Annotated[list[str] | None, typer.Option(
        "--weights", metavar="PATH|NAME=PATH",
        help="Local weights file (.safetensors, or a torch state dict loaded with "
             "weights_only=True) for --model (or the default); with several models, "
             "NAME=PATH for each model that needs one (repeatable).")] = None,
    rank_by: Annotated[RankBy, typer.Option(
        "--rank-by", help="With several --model: the measure at the penultimate block that "
                          "ranks them (LogME: the literature's strongest single score).")]
        = RankBy.logme,
    recommend_all: Annotated[bool, typer.Option(
        "--recommend-all", help="With several --model: show the recommendation of every "
                                "model, not only the top one.")] = False,
    image_size: Annotated[int | None, typer.Option(
        "--image-size", help="Input resolution in pixels (default: the model's own).")] = None,
    max_per_class: Annotated[int | None, typer.Option(
        "--max-per-class", help="Use at most N images per class, sampled with --seed.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling.")] = _OPTIONS.seed,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Images per forward pass of the feature extraction (default: 8 "
                             "on the CPU, 32 on a GPU).")] = _OPTIONS.batch_size,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="DataLoader worker processes (default: min(4, CPU count)).")] = None,
    device: Annotated[str, typer.Option(
        "--device", metavar="auto|cpu|cuda|cuda:K",
        help="Where to run the backbone and the fine-tuning; cuda:K for the K-th GPU (one "
             "search worker per GPU).")] = _OPTIONS.device,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Neither read nor write the caches (features, "
                           "fine-tuning runs).")] = False,
    offline: Annotated[bool, typer.Option(
        "--offline", help="Never contact a model hub; use only locally cached weights.")] = False,
    scratch: Annotated[bool, typer.Option(
        "--scratch", help="Also train the network from random initialisation on a held-out "
                          "split (the paper's own measure of fit; minutes on a CPU).")] = False,
    scratch_epochs: Annotated[int, typer.Option(
        "--scratch-epochs", help="Epochs of the --scratch training.")] = SCRATCH_EPOCHS,
    validate: Annotated[bool, typer.Option(
        "--validate", help="Fine-tune the recommendation and the binary default (all layers "
                           "transferred, one lr, L2) with the same budget and seeds on a "
                           "train/validation/test split (or your train/, val/, test/ folders) "
                           f"and report test accuracy; {VALIDATE_MEASURED}.")] = False,
    validate_seeds: Annotated[int, typer.Option(
        "--validate-seeds", help="Seeds per setting for --validate.")] = _VALIDATION.seeds,
    validate_epochs: Annotated[int, typer.Option(
        "--validate-epochs", help="Epochs of each --validate run.")] = _VALIDATION.epochs,
    validate_size: Annotated[int, typer.Option(
        "--validate-size", help="Image size in pixels for --validate runs.")]
        = _VALIDATION.image_size,
    train_epochs: Annotated[int | None, typer.Option(
        "--train-epochs", metavar="N",
        help="The training you plan: epochs. The advice follows the meta-benchmark's evidence "
             "at the nearest benchmark budget (default: with --validate, the validation's "
             "epochs and size; else the recommendation's own epochs at --image-size or "
             "224 px), and the recommendation's epochs are N (as --set epochs=N).",
        show_default=False)] = _OPTIONS.train_epochs,
    train_size: Annotated[int | None, typer.Option(
        "--train-size", metavar="PX",
        help="The training you plan: image size in pixels. The advice follows the "
             "meta-benchmark's evidence at the nearest benchmark budget (default: with "
             "--validate, the validation's epochs and size; else the recommendation's own "
             "epochs at --image-size or 224 px).", show_default=False)]
        = _OPTIONS.train_size,
    search: Annotated[int, typer.Option(
        "--search", metavar="N",
        help="Also try N settings within the recommendation's ranges, starting from it "
             "(Optuna TPE, scored on the validation split; implies --validate). Resumable: "
             "rerun the same command to continue.")] = 0,
    search_db: Annotated[Path | None, typer.Option(
        "--search-db", help="File that stores the search's trials (default: in the nbtl "
                            "cache folder, keyed by the inputs); the same as --storage "
                            "FILE.")] = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", metavar="URL",
        help="Where the search's trials live: a journal FILE (one machine, several "
             "processes), postgresql://USER:PASSWORD@HOST/DB or mysql://... (several "
             "machines), redis://HOST:PORT. Every process started on one storage with the "
             "same inputs joins one study.")] = None,
    study: Annotated[str | None, typer.Option(
        "--study", help="Name of the search's study in the storage (default: nbtl-<key>, "
                        "the key made from the images' contents, not their path).")] = None,
    role: Annotated[Role, typer.Option(
        "--role", help="main: train the default and the recommendation, search, confirm the "
                       "best and report; worker: only run search trials (start any number, "
                       "on any machine, next to one main).")] = Role.main,
    prune: Annotated[bool, typer.Option(
        "--prune", help="Stop weak search trials early (successive halving on the "
                        "validation accuracy after each epoch).")] = False,
    set_values: Annotated[list[str] | None, typer.Option(
        "--set", metavar="NAME=VALUE",
        help="Override a recommended hyperparameter (repeatable), e.g. --set base_lr=0.003; "
             "the value wins over every rule and is marked as yours. Names: "
             + ", ".join(heuristics.OVERRIDABLE) + ".")] = None,
    json_out: Annotated[str | None, typer.Option(
        "--json", help="Write the result as JSON to this file, or '-' for stdout "
                       "(the report then goes to stderr).")] = None,
    html_out: Annotated[Path | None, typer.Option(
        "--html", help="Also write a self-contained HTML report with plots to this file "
                       "(needs matplotlib: pip install \"nbtl[plot]\").")] = None,
    plot_out: Annotated[Path | None, typer.Option(
        "--plot", help="Also write the per-block profile figure to this .png (or .svg) "
                       "file (needs matplotlib).")] = None,
    emit: Annotated[Emit | None, typer.Option(
        "--emit", help="Also print the recommendation for your own trainer on stdout (the "
                       "report then goes to stderr): 'timm' the flags of timm's train.py, "
                       "'torch' a PyTorch snippet with the parameter groups and the "
                       "regulariser.", show_default=False)] = None,
    explain: Annotated[bool, typer.Option(
        "--explain", "-v", help="A longer report: what each measure means and the sources of "
                                "the rules.")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No report or progress; errors only.")] = False,
    list_probes: Annotated[bool, typer.Option(
        "--list-probes", help="List the available measures and exit.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")]
        = False,
) -> None:
    """Analyse how well a pre-trained backbone fits an image dataset, layer by layer, and
    recommend non-binary fine-tuning settings (layers to re-initialise, per-group learning
    rates, L2-SP/L2 mix).

    Exit codes: 0 success, 2 bad usage, 3 unusable dataset, 4 model or weights unavailable.
    """
    if version:
        from recommender import __version__

        print(f"nbtl {__version__}")
        return
    if list_probes:
        report.print_probe_list(report.console(stderr=False))
        return
    if path is None:
        raise UsageError("Missing the dataset PATH.", "Usage: nbtl-recommend PATH [OPTIONS]")
    if json_out is not None and not json_out.strip():
        raise UsageError("--json is given an empty file name.",
                         "Give a file path, or '-' to write the JSON to stdout.")
    if emit is not None and json_out == "-":
        raise UsageError(f"--emit {emit.value} and --json - both write to stdout.",
                         "Write the JSON to a file (--json FILE), or leave out one of them.")
    check_device(device)  # before the ranking branch, which has no Options yet
    overrides = _parse_overrides(set_values or [])
    from recommender.ranking import pair_weights, parse_models

    models = parse_models(model)
    files = pair_weights(models, weights)
    if len(models) > 1:
        return _rank_command(
            path, models, files, rank_by.value, recommend_all, json_out=json_out, emit=emit,
            explain=explain, quiet=quiet, search_db=search_db, html_out=html_out,
            plot_out=plot_out,
            options=dict(labels_csv=labels, image_size=image_size, max_per_class=max_per_class,
                         seed=seed, batch_size=batch_size, workers=workers,
                         device=device, use_cache=not no_cache, offline=offline,
                         scratch=scratch, scratch_epochs=scratch_epochs, overrides=overrides,
                         train_epochs=train_epochs, train_size=train_size,
                         validate=validate, search=search))
    options = Options.from_kwargs(
        labels_csv=labels, model=models[0], weights=files.get(models[0]),
        image_size=image_size,
        max_per_class=max_per_class, seed=seed, batch_size=batch_size, workers=workers,
        device=device, use_cache=not no_cache, offline=offline, scratch=scratch,
        scratch_epochs=scratch_epochs, overrides=overrides, validate=validate,
        validate_seeds=validate_seeds, validate_epochs=validate_epochs,
        validate_size=validate_size, train_epochs=train_epochs, train_size=train_size,
        search=search, search_db=search_db, storage=storage, study=study, role=role.value,
        prune=prune)
    from recommender.pipeline import recommend

    json_file, out, err = _outputs(path, json_out, emit, quiet, html_out, plot_out)
    json_to_stdout = json_out == "-"
    if search_db is not None:
        _refuse_inside(search_db, path, "--search-db")
    if storage is not None and "://" not in storage:
        _refuse_inside(Path(storage), path, "--storage")
    result = recommend(
        path, options,
        on_stage=None if quiet else report.stage_printer(err),
        progress=None if quiet else report.progress_factory(err),
    )
    # The files first: a report cut short (a closed pipe) must not lose them.
    written = _write_files(result, _document(result), json_file, html_out, plot_out)
    if emit is not None:
        from recommender.export import emit as export

        sys.stdout.write(export(result, emit.value))
        sys.stdout.flush()  # the snippet before the report when both go to one terminal
    if not quiet:
        report.print_report(result, out, explain=explain)
    if json_to_stdout:
        sys.stdout.write(_document(result))
    for what in written:
        err.print(report.printable(f"Wrote {what}."), markup=False, soft_wrap=True)


def _rank_command(path: Path, models, files, rank_by: str, recommend_all: bool, *,
                  json_out: str | None, emit: Emit | None, explain: bool, quiet: bool,
                  search_db: Path | None, html_out: Path | None, plot_out: Path | None,
                  options: dict) -> None:
    """Several ``--model``: rank them (:func:`recommender.ranking.rank`), report the table and
    the top model's recommendation (every model's with ``--recommend-all``)."""
    from recommender.ranking import rank

    if options["validate"] or options["search"] or search_db is not None:
        raise UsageError("--validate and --search fine-tune one model, not a ranking.",
                         "Rank first, then run nbtl-recommend PATH --model TOP --validate.")
    json_file, out, err = _outputs(path, json_out, emit, quiet, html_out, plot_out)
    json_to_stdout = json_out == "-"
    del options["validate"], options["search"]
    ranking = rank(path, models, weights=files, rank_by=rank_by, recommend_all=recommend_all,
                   on_stage=None if quiet else report.stage_printer(err),
                   progress=None if quiet else report.progress_factory(err), **options)
    doc = ranking.to_dict()
    document = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    # The HTML page of a ranking: the top model's report with the ranking table.
    written = _write_files(doc, document, json_file, html_out, plot_out)
    if emit is not None:
        from recommender.export import emit as export

        sys.stdout.write(export(ranking.top.result, emit.value))
        sys.stdout.flush()
    if not quiet:
        report.print_ranking(ranking, out, explain=explain)
    if json_to_stdout:
        sys.stdout.write(document)
    for what in written:
        err.print(report.printable(f"Wrote {what}."), markup=False, soft_wrap=True)


def _outputs(path: Path, json_out: str | None, emit: Emit | None, quiet: bool,
             html_out: Path | None, plot_out: Path | None) -> tuple[Path | None, Any, Any]:
    """The --json file (None for none or stdout) and the report and stage consoles, with
    every output path checked before any work."""
    json_to_stdout = json_out == "-"
    json_file = Path(json_out) if json_out and not json_to_stdout else None
    out = report.console(stderr=json_to_stdout or emit is not None)
    err = report.console(stderr=True, quiet=quiet)
    if json_file is not None:
        _refuse_inside(json_file, path, "--json")
        _check_writable(json_file, "--json")
    _check_figure_outputs(html_out, plot_out, path)
    return json_file, out, err


def _write_files(result_or_doc: Any, document: str, json_file: Path | None,
                 html_out: Path | None, plot_out: Path | None) -> list[str]:
    """Write the JSON, the HTML page and the profile plot that were asked for, first (a
    report cut short by a closed pipe must not lose them); what was written, in words."""
    written = []
    if json_file is not None:
        json_file.write_text(document, encoding="utf-8")
        written.append(f"the JSON to {json_file}")
    if html_out is not None or plot_out is not None:
        from recommender.html import write_html, write_profile_plot

        for target, write, what in ((html_out, write_html, "the HTML report"),
                                    (plot_out, write_profile_plot, "the profile plot")):
            if target is not None:
                write(result_or_doc, target)
                written.append(f"{what} to {target}")
    return written


def _parse_overrides(texts: list[str]) -> dict[str, object]:
    """``--set name=value`` strings -> typed values; a bad one is a usage error naming it."""
    overrides: dict[str, object] = {}
    for text in texts:
        try:
            name, value = heuristics.parse_override(text)
        except ValueError as exc:
            raise UsageError(f"--set {text}: {exc}",
                             "List the settings with their types in the README "
                             "(section 'Overriding a recommendation').") from None
        if name in overrides:
            raise UsageError(f"--set {name} is given twice.", "Give each setting once.")
        overrides[name] = value
    return overrides


def _document(result) -> str:
    return json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"


def _refuse_inside(target: Path, dataset: Path, option: str) -> None:
    """nbtl never writes into the dataset folder, not even when asked to."""
    target, dataset = target.resolve(), dataset.resolve()
    if dataset == target or dataset in target.parents:
        raise UsageError(
            f"{option} {target} is inside the dataset folder {dataset}.",
            "nbtl never writes into a dataset folder; choose a path outside it.",
        )


def _check_writable(target: Path, option: str, example: str = "result.json") -> None:
    """A --json (--html, --plot) file that cannot be written is refused before the analysis,
    not after it (when its results would be lost). The folder is not created: a typo in it
    would otherwise scatter files."""
    if target.is_dir():
        raise UsageError(f"{option} {target} is a folder.",
                         f"Give a file name, e.g. {option} {target / example}.")
    folder = target.parent
    if not folder.is_dir():
        raise UsageError(f"{option} {target}: the folder {folder} does not exist (nbtl does "
                         "not create it).", f"Create it first (mkdir -p {folder}), or choose "
                                            "another path.")
    if not os.access(target if target.exists() else folder, os.W_OK):
        raise UsageError(f"{option} {target} cannot be written (no permission).",
                         "Choose a file in a folder you can write to.")


PLOT_SUFFIXES = (".png", ".svg")


def _check_figure_outputs(html_out: Path | None, plot_out: Path | None, dataset: Path) -> None:
    """--html and --plot: matplotlib installed, a known figure format, a writable file outside
    the dataset; all before any work."""
    if html_out is None and plot_out is None:
        return
    from recommender.plots import require_matplotlib

    require_matplotlib()
    if plot_out is not None and plot_out.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"--plot {plot_out}: the file name must end in .png or .svg "
                         "(it chooses the format).", f"e.g. --plot {plot_out.with_suffix('.png')}")
    if html_out is not None and plot_out is not None and html_out.resolve() == plot_out.resolve():
        raise UsageError(f"--html and --plot both name {html_out}.", "Give two files.")
    for target, option, example in ((html_out, "--html", "report.html"),
                                     (plot_out, "--plot", "profile.png")):
        if target is not None:
            _refuse_inside(target, dataset, option)
            _check_writable(target, option, example)


def main() -> None:
    """Console-script entry point: NbtlError -> message on stderr and its exit code."""
    _main()


def _main() -> None:
    command = typer.main.get_command(app)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", NbtlWarning)
            warnings.showwarning = _show_warning
            code = command.main(prog_name="nbtl-recommend", standalone_mode=False)
    except NbtlError as exc:
        report.print_error(exc)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
    except Exception as exc:
        if _is_usage_error(exc):
            exc.show()
            sys.exit(EXIT_USAGE)
        if _raised_by_an_interrupt(exc):
            _interrupted()
        if os.environ.get("NBTL_DEBUG"):
            raise
        print(f"nbtl-recommend: internal error: {type(exc).__name__}: {exc}\n"
              "This is a bug; please report it. Set NBTL_DEBUG=1 to see the traceback.",
              file=sys.stderr)
        sys.exit(1)
    # Outside standalone mode, newer typer/click *return* an exit code (130 for Ctrl-C)
    # where older ones raised: a returned code is the command's exit status.
    if code == EXIT_INTERRUPTED:
        _interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)


def _raised_by_an_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a Ctrl-C unwound: a clean-up that fails because the
    interrupt cut its work short (Optuna's journal lock, renamed away mid-release) replaces
    the KeyboardInterrupt, which stays in its context chain."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _interrupted() -> NoReturn:
    print("nbtl-recommend: interrupted.", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


_show_other_warning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """An :class:`NbtlWarning` as one line on stderr; any other warning as Python shows it."""
    if issubclass(category, NbtlWarning):
        print(f"nbtl-recommend: warning: {report.printable(str(message))}", file=sys.stderr)
    else:
        _show_other_warning(message, category, filename, lineno, file, line)


def _is_usage_error(exc: Exception) -> bool:
    """Click's own errors (unknown option, bad value); typer vendors click, so duck-type."""
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__) and callable(
        getattr(exc, "show", None))
