"""The ``impresslearn`` command line.

    impresslearn list                        presets, backbones, scenarios, methods, data sets
    impresslearn show PRESET [--set k=v]     the resolved config, as JSON
    impresslearn run PRESET [--set k=v ...] [--out DIR] [--data-root DIR]
    impresslearn run --config DIR/config.json
    impresslearn run --resume DIR             continue a stopped run at its next task
    impresslearn run PRESET --seeds N         N repeats, every seed shifted; mean ± std
    impresslearn eval DIR                     evaluate a saved run (task ids given)
    impresslearn bench NAME [--json]         side-by-side speed benchmarks
    impresslearn compare RUN_DIR ... [--plot F]  compare finished runs
    impresslearn data check [NAME ...]       where each data set is found, verified
    impresslearn data fetch NAME [--mirror URL]  download a data set into the data root

The only place that reads ``sys.argv`` and environment variables (``IMPRESSLEARN_DATA``).
Errors caused by input are printed on one line (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import inspect
import json
import logging
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

from impresslearn import __version__
from impresslearn.errors import ConfigError, ImpressLearnError

EPILOG = """\
examples:
  impresslearn run quickstart
  impresslearn run supsup-permuted-mnist --set scenario.num_tasks=10 --data-root ~/data
  impresslearn run supsup-split-cifar100 --set scenario.num_tasks=2 --set train.epochs=1
  impresslearn show supsup-rotated-mnist --set train.lr=3e-4
  impresslearn eval runs/NAME --set eval.scenario=GNu --set inference.procedure=binary
  impresslearn bench mask-step --backbone gem_resnet18 --json
  impresslearn run supsup-split-cifar100 --device cuda --precision bf16
  impresslearn run --resume runs/NAME --device cpu

data: the data root is --data-root, else $IMPRESSLEARN_DATA, else ~/.cache/impresslearn; it holds
mnist/ (idx files), fashion-mnist/, cifar100/ (npz) or cifar-100-python/, ... (docs/data.md);
scenario.dataset=folder:PATH[@SIZE] reads any tree of class folders. mnist_embedded needs no data
root. Nothing is downloaded unless you ask: `impresslearn data fetch mnist` (also fashion_mnist,
cifar100); `impresslearn data check` says what is found where.
"""


def _add_runtime_args(
    p: argparse.ArgumentParser, *, precision: bool = True, workers: bool = True
) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="where to compute: auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps; "
        "not part of the experiment (a run resumes on any device)",
    )
    p.add_argument(
        "--threads",
        default="auto",
        help="torch intra-op threads per process: auto (default: the cores free when the run "
        "starts, one per process under torchrun, OMP_NUM_THREADS if set; a resumed run keeps "
        "its count) or N; results are bit-identical for a given count only",
    )
    if workers:
        p.add_argument(
            "--workers",
            default="auto",
            help="processes decoding streamed image folders (scenario.loading=stream): auto (one "
            "per core but one, at most 8) or N (0: decode in the training process); results do "
            "not depend on it",
        )
    if precision:
        p.add_argument(
            "--precision",
            choices=("fp32", "bf16"),
            default="fp32",
            help="forward passes in float32, or under bfloat16 autocast (meant for the residual "
            "backbones on CUDA; scores, alphas and batch-norm statistics stay float32)",
        )


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.lr=1e-3 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="impresslearn",
        description="Continual learning without forgetting on frozen random networks: SupSup "
        "supermasks (Wortsman et al. 2020) and ImpressLearn combined task impressions "
        "(Bhardwaj et al. 2022).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"impresslearn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --debug is accepted after the command too (SUPPRESS keeps the top-level value otherwise).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )

    p = sub.add_parser(
        "run", parents=[common], help="run a preset (or a saved config) and write a run folder"
    )
    p.add_argument("preset", nargs="?", help="preset name (see `impresslearn list`)")
    p.add_argument("--config", type=Path, help="replay a config.json instead of a preset")
    _add_config_args(p)
    p.add_argument("--out", type=Path, help="run folder (default: runs/PRESET-TIMESTAMP)")
    p.add_argument(
        "--data-root",
        help="folder holding the data sets (default: $IMPRESSLEARN_DATA, else ~/.cache/impresslearn)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="continue the run in DIR at its next task (same results as an uninterrupted run); "
        "with --set scenario.num_tasks=N (more tasks) the finished stream is extended",
    )
    p.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="repeat the run N times, every seed shifted by 0..N-1, into OUT/seed-i, and report "
        "the mean ± std of the headline numbers (OUT/seeds.json)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-task lines")
    p.add_argument(
        "--log",
        choices=("tensorboard",),
        help="also write TensorBoard event files into the run folder (RUN/tensorboard: loss, "
        "per-task accuracy, the accuracy matrix); needs pip install 'impresslearn[tensorboard]'",
    )
    _add_runtime_args(p)

    sub.add_parser(
        "list", parents=[common], help="list presets, backbones, scenarios, methods and data sets"
    )

    p = sub.add_parser(
        "compare", parents=[common], help="compare run folders: a markdown table and a plot"
    )
    p.add_argument("runs", nargs="+", type=Path, help="run folders (holding metrics.json)")
    p.add_argument("--plot", type=Path, default=None, help="write the comparison plot here (PNG)")
    p.add_argument(
        "--per-task-plot",
        type=Path,
        default=None,
        help="also plot every run's final accuracy per task (runs of the same task stream)",
    )

    p = sub.add_parser(
        "eval",
        parents=[common],
        help="evaluate a saved run folder (task ids given, or inferred with --set eval.scenario=GNu)",
    )
    p.add_argument(
        "run_dir",
        type=Path,
        help="a run folder holding checkpoint.safetensors, or a folder of repeats (run --seeds: "
        "each is evaluated, then the mean ± std)",
    )
    p.add_argument("--data-root", help="folder holding the data sets")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="eval.KEY=VALUE",
        help="evaluation settings only; with eval.scenario=GNu or GNs the tasks are inferred, "
        "e.g. --set eval.scenario=GNu --set inference.procedure=binary (repeatable)",
    )
    _add_runtime_args(p)

    p = sub.add_parser("show", parents=[common], help="print a preset's resolved config as JSON")
    p.add_argument("preset")
    _add_config_args(p)

    p = sub.add_parser("bench", parents=[common], help="side-by-side speed benchmarks")
    p.add_argument("name", help="benchmark name (see `impresslearn bench --list`)", nargs="?")
    p.add_argument("--list", action="store_true", help="list the benchmarks")
    p.add_argument("--json", action="store_true", help="print one JSON object (key `ratio`)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default: per bench)")
    p.add_argument("--backbone", default=None, help="backbone to benchmark (default: per bench)")
    p.add_argument("--data-root", help="folder holding the data sets (data-pipeline, stream)")
    p.add_argument("--tasks", help="stream: the tasks to measure at (default 10,100,1000,2500)")
    p.add_argument("--dataset", help="data-pipeline: an image folder to stream, folder:PATH@SIZE")
    _add_runtime_args(p, precision=False, workers=False)

    p = sub.add_parser(
        "data", parents=[common], help="check the data sets, or download one (only when asked)"
    )
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser(
        "check",
        parents=[common],
        help="load and verify data sets; exit status 1 if any is missing or corrupt",
    )
    q.add_argument("names", nargs="*", help="data sets to check (default: all known ones)")
    q.add_argument("--data-root", help="folder holding the data sets")
    q = data_sub.add_parser(
        "fetch",
        parents=[common],
        help="download a data set into the data root, verify it, then move it into place",
        description="Download a data set into the data root (created if missing): staged in a "
        "temporary folder there, checked against the published checksums, loaded, then moved "
        "into place. A data set already present and verified is not downloaded again.",
    )
    q.add_argument("name", help="mnist, fashion_mnist or cifar100")
    q.add_argument(
        "--data-root",
        help="where to put it (default: $IMPRESSLEARN_DATA, else ~/.cache/impresslearn)",
    )
    q.add_argument(
        "--mirror",
        metavar="URL_OR_FOLDER",
        help="fetch the same file names from this http(s):// or file:// address or local folder "
        "instead of the data set's official address",
    )
    q.add_argument("--force", action="store_true", help="download even if already present")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _resolve_config(args: argparse.Namespace):
    """The config of the preset (or ``--config`` file) with the ``--set`` overrides, checked
    against its experiment kind's recipe."""
    from impresslearn.config import apply_overrides
    from impresslearn.presets import get_preset
    from impresslearn.runners import check_experiment, load_config_file
    from impresslearn.runners.recipes import refuse_unused

    if getattr(args, "config", None) is not None:
        if args.preset:
            raise ImpressLearnError("give a preset or --config, not both")
        path = args.config / "config.json" if args.config.is_dir() else args.config
        config = load_config_file(path)
    elif args.preset:
        config = get_preset(args.preset)
    else:
        raise ImpressLearnError("name a preset (see `impresslearn list`) or give --config FILE")
    config = apply_overrides(config, args.overrides)
    check_experiment(config)
    refuse_unused(config, [o.partition("=")[0].strip() for o in args.overrides])
    _warn_unused_inference(config, args.overrides)
    return config


def _warn_unused_inference(config, overrides: list[str]) -> None:
    """A one-line warning for inference settings given where nothing reads them (a warning, not
    an error: ``eval`` may switch the procedure of a run whose config holds other settings)."""
    given = [o for o in overrides if o.startswith("inference.")]
    warn = logging.getLogger("impresslearn").warning
    if given and config.kind == "stream" and not config.eval.infers_tasks:
        warn(
            "impresslearn: %s has no effect with eval.scenario=GG (task ids given); add --set "
            "eval.scenario=GNu (or GNs) to infer the tasks",
            ", ".join(given),
        )
        return
    unused = config.inference.unused_settings()
    for item in given:
        name = item.partition("=")[0].strip().removeprefix("inference.")
        if name in unused:
            warn("impresslearn: %s has no effect: %s", item, unused[name])


def _context(args: argparse.Namespace, out: Path | None, *, resume: bool = False):
    """The run context of the command line, built once: ``--device`` / ``--precision`` resolved
    (before anything is written), the data root, the folder, progress and logging."""
    from impresslearn.checkpoint import CHECKPOINT_NAME, recorded_threads
    from impresslearn.data import resolve_data_root
    from impresslearn.runners import RunContext

    recorded = recorded_threads(out / CHECKPOINT_NAME) if resume and out is not None else None
    return RunContext.create(
        resolve_data_root(args.data_root, os.environ),
        out,
        device=args.device,
        precision=getattr(args, "precision", "fp32"),
        overwrite=getattr(args, "overwrite", False),
        resume=resume,
        progress=not args.quiet,
        log=getattr(args, "log", None),
        threads=getattr(args, "threads", None),
        recorded_threads=recorded,
        workers=getattr(args, "workers", "auto"),
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from impresslearn.report import seeds_table
    from impresslearn.runners import check_experiment, run, run_seeds

    if args.resume is not None:
        return _resume(args)
    config = _resolve_config(args)
    out = args.out or Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    ctx = _context(args, out)
    if not args.quiet:
        print(f"impresslearn {__version__}: running {config.name} on {ctx.runtime.device} -> {out}")
    if args.seeds is not None:
        print(seeds_table(run_seeds(config, ctx, args.seeds).metrics))
    else:
        recipe = check_experiment(config)
        result = run(config, ctx)
        if recipe.report is not None:
            print(recipe.report(result.metrics))
    print(f"run folder: {out}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from impresslearn.checkpoint import checkpoint_config
    from impresslearn.config import apply_overrides
    from impresslearn.report import seeds_table
    from impresslearn.runners import check_experiment, resume_seeds, run
    from impresslearn.runners.seeds import is_seeds_folder

    run_dir = args.resume
    if args.out is not None and args.out.resolve() != run_dir.resolve():
        raise ImpressLearnError("--resume continues in its own folder: drop --out")
    if args.config is not None:
        raise ImpressLearnError("--resume reads the run's own config: drop --config")
    if is_seeds_folder(run_dir):
        if args.preset or args.overrides or args.seeds is not None:
            raise ImpressLearnError(
                "--resume of repeats over seeds finishes them as they were started: drop the "
                "preset, --set and --seeds"
            )
        print(seeds_table(resume_seeds(_context(args, run_dir)).metrics))
        print(f"run folder: {run_dir}")
        return 0
    if args.seeds is not None:
        raise ImpressLearnError("--resume continues one run; --seeds starts new repeats: drop one")
    saved = checkpoint_config(run_dir / "checkpoint.safetensors")
    config = _resolve_config(args) if args.preset else apply_overrides(saved, args.overrides)
    recipe = check_experiment(config)
    result = run(config, _context(args, run_dir, resume=True))
    if recipe.report is not None:
        print(recipe.report(result.metrics))
    print(f"run folder: {run_dir}")
    return 0


EVAL_SECTIONS = ("eval.", "inference.")


def _cmd_eval(args: argparse.Namespace) -> int:
    from impresslearn.runners.seeds import is_seeds_folder

    not_eval = [o for o in args.overrides if not o.startswith(EVAL_SECTIONS)]
    if not_eval:
        raise ConfigError(
            f"impresslearn eval changes evaluation settings only (eval.*, inference.*), got "
            f"{not_eval}; to change training, start a new run"
        )
    ctx = _context(args, None)
    if not is_seeds_folder(args.run_dir):
        _eval_run(args.run_dir, ctx, args.overrides, verbose=True)
        return 0
    # A folder of repeats over seeds: evaluate each, then the mean ± std over them.
    from impresslearn.report import seeds_table
    from impresslearn.runners.seeds import load_seeds_record, summarize

    record = load_seeds_record(args.run_dir)
    metrics = []
    for name in record["runs"]:
        metrics.append(_eval_run(args.run_dir / name, ctx, args.overrides, verbose=False))
        print(f"{name}: {_eval_line(metrics[-1])}")
    print(seeds_table({**record, "summary": summarize(metrics)}))
    return 0


def _eval_line(metrics: dict) -> str:
    if "task_inference_accuracy" in metrics:
        return (
            f"average accuracy {100 * metrics['average_accuracy_inferred']:.2f}% with the task "
            f"inferred, task inference {100 * metrics['task_inference_accuracy']:.2f}%"
        )
    return f"average accuracy {100 * metrics['average_accuracy']:.2f}% with task ids"


def _eval_run(run_dir: Path, ctx, overrides: list[str], *, verbose: bool) -> dict:
    """Evaluate one saved run (task ids given, or inferred per ``eval.*`` / ``inference.*``
    overrides); print the per-task table when ``verbose``; return the headline metrics."""
    from impresslearn.config import apply_overrides
    from impresslearn.report import margin_text
    from impresslearn.runners import (
        evaluate_run,
        evaluate_run_inferred,
        load_run,
        save_evaluation,
    )

    run = load_run(run_dir, runtime=ctx.runtime)
    config = apply_overrides(run.config, overrides)

    def save(metrics: dict) -> None:
        if ctx.runtime.is_writer:
            path = save_evaluation(run_dir, run, config, overrides, metrics)
            if verbose:
                print(f"saved: {path}")

    if config.eval.infers_tasks:
        metrics = evaluate_run_inferred(run, ctx.data_root, config, progress=ctx.progress)
        if not verbose:
            save(metrics)
            return metrics
        e, inf = config.eval, config.inference
        print(
            f"{e.scenario}, {inf.procedure} on {inf.objective}, task inferred per batch of "
            f"{inf.batch} from {inf.images} image(s)"
        )
        print(f"{'task':>5} {'accuracy %':>11} {'task inference %':>17}")
        tasks = metrics.get("inferred_tasks", range(len(metrics["accuracies_inferred"])))
        for t, acc, right in zip(
            tasks, metrics["accuracies_inferred"], metrics["task_inference_per_task"], strict=True
        ):
            print(f"{t:>5} {100 * acc:>11.2f} {100 * right:>17.2f}")
        print(
            f"average accuracy {100 * metrics['average_accuracy_inferred']:.2f}%, task "
            f"inference {100 * metrics['task_inference_accuracy']:.2f}%"
        )
        if "average_accuracy_fitted_alphas" in metrics:
            fitted = metrics["average_accuracy_fitted_alphas"]
            print(f"the fitted alphas themselves classify {100 * fitted:.2f}%")
        if "task_inference_margin_median" in metrics:
            print(f"one-shot margin {margin_text(metrics)}")
        if "shortlist_recall" in metrics:
            recall = 100 * metrics["shortlist_recall"]
            print(f"the shortlist of {inf.shortlist_size} held the true task for {recall:.2f}%")
        _unfinished_note(run, run_dir)
        save(metrics)
        return metrics
    accs = evaluate_run(run, ctx.data_root, progress=ctx.progress)
    average = sum(accs) / len(accs) if accs else float("nan")
    if verbose:
        # The latest saved accuracy of each task: the last row's where it was evaluated, else
        # the task's own (a stream evaluated on its diagonal or a sample, or unfinished).
        matrix, last = run.state.matrix, run.state.next_task - 1
        saved = [
            matrix[last, t] if matrix[last, t] == matrix[last, t] else matrix[t, t]
            for t in run.tasks
        ]
        print(f"{'task':>5} {'accuracy %':>11} {'saved %':>9}")
        for t, acc, s in zip(run.tasks, accs, saved, strict=True):
            print(f"{t:>5} {100 * acc:>11.2f} {100 * s:>9.2f}")
        if accs:
            print(f"average accuracy: {100 * average:.2f}% over {len(accs)} tasks")
        _unfinished_note(run, run_dir)
    metrics = {"average_accuracy": average, "accuracies": accs, "tasks": run.tasks}
    save(metrics)
    return metrics


def _unfinished_note(run, run_dir: Path) -> None:
    planned = run.config.scenario.num_tasks
    if run.state.next_task < planned:
        print(
            f"the run is unfinished: {run.state.next_task} of its {planned} tasks learned "
            f"(continue it with `impresslearn run --resume {run_dir}`)"
        )


def _cmd_list(args: argparse.Namespace) -> int:
    from impresslearn.backbones import BACKBONES
    from impresslearn.data import list_datasets
    from impresslearn.methods import METHODS
    from impresslearn.presets import PRESETS, preset_summary
    from impresslearn.runners import RECIPES
    from impresslearn.scenarios import SCENARIOS

    print("presets:")
    width = max(len(n) for n in PRESETS.names())
    for name in PRESETS.names():
        print(f"  {name:<{width}}  {preset_summary(name)}")
    print("experiment kinds (kind=...):")
    for name in RECIPES.names():
        print(f"  {name:<10} {RECIPES.get(name).doc}")
    print("methods:")
    for name in METHODS.names():
        method = METHODS.get(name)
        scenarios = ", ".join(s for s in ("GG", "GNs", "GNu", "NNs") if s in method.scenarios)
        print(
            f"  {name:<13} scenarios {scenarios}; task inference "
            f"{', '.join(sorted(method.procedures))}"
        )
    print("backbones: " + ", ".join(BACKBONES.names()))
    print("scenarios: " + ", ".join(SCENARIOS.names()))
    print("datasets:  " + ", ".join(list_datasets()) + " (and folder:PATH)")
    print("           `impresslearn data check` says which are found; `data fetch NAME` gets one")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from impresslearn.plots import plot_comparison, plot_per_task
    from impresslearn.report import compare_table
    from impresslearn.runners import load_evaluations
    from impresslearn.runners.seeds import is_seeds_folder, load_seeds_record
    from impresslearn.storage import read_checked_json

    folders = []  # (name, folder); a folder of repeats over seeds stands for its runs
    for folder in args.runs:
        if is_seeds_folder(folder):
            names = load_seeds_record(folder)["runs"]
            folders += [(f"{folder.name}/{name}", folder / name) for name in names]
        else:
            folders.append((folder.name, folder))
    runs, evaluations = [], []
    for name, folder in folders:
        path = folder / "metrics.json"
        if not path.is_file():
            raise ImpressLearnError(f"{path} does not exist: is {folder} a finished run folder?")
        metrics = read_checked_json(path)
        runs.append((name, metrics))
        # Its saved re-evaluations (impresslearn eval), as rows of their own in the table.
        for label, record in load_evaluations(folder):
            unfinished = "" if record.get("finished", True) else ", unfinished"
            evaluations.append(
                (f"{name} [eval {label}{unfinished}]", {**metrics, **record["metrics"]})
            )
    print(compare_table(runs + evaluations))
    if args.plot is not None:
        plot_comparison(runs, args.plot)
        print(f"plot: {args.plot}")
    if args.per_task_plot is not None:
        names = runs[0][1].get("task_names")
        if any(m.get("task_names") != names for _, m in runs):
            raise ImpressLearnError(
                "--per-task-plot needs runs of the same task stream (their task_names differ)"
            )
        series = {name: m["final_accuracies"] for name, m in runs}
        plot_per_task(names, series, args.per_task_plot, "final accuracy per task")
        print(f"per-task plot: {args.per_task_plot}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    args.config = None
    print(_resolve_config(args).to_json(), end="")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from impresslearn.bench import BENCHMARKS, format_table
    from impresslearn.data import resolve_data_root

    if args.list or not args.name:
        for name in BENCHMARKS.names():
            doc = (BENCHMARKS.get(name).__doc__ or "").strip().splitlines()[0]
            print(f"  {name:<12} {doc}")
        return 0
    bench = BENCHMARKS.get(args.name)
    from impresslearn.runtime import Runtime

    # refuses a device that does not exist; sets the threads (benches that compare thread
    # counts set their own)
    runtime = Runtime.create(args.device, threads=args.threads)
    kwargs = {}
    if "device" in inspect.signature(bench).parameters:
        kwargs["device"] = runtime.device
    elif args.device not in ("auto", "cpu"):
        raise ImpressLearnError(f"bench {args.name} runs on the CPU only: drop --device")
    if args.backbone is not None:
        kwargs["backbone"] = args.backbone
    if args.repeats is not None:
        if args.repeats < 1:
            raise ConfigError(f"--repeats must be at least 1, got {args.repeats}")
        kwargs["repeats"] = args.repeats
    if args.tasks is not None:
        if "tasks" not in inspect.signature(bench).parameters:
            raise ImpressLearnError(f"bench {args.name} has no --tasks")
        kwargs["tasks"] = args.tasks
    if args.dataset is not None:
        if "dataset" not in inspect.signature(bench).parameters:
            raise ImpressLearnError(f"bench {args.name} has no --dataset")
        kwargs["dataset"] = args.dataset
    if "data_root" in inspect.signature(bench).parameters:
        kwargs["data_root"] = resolve_data_root(args.data_root, os.environ)
    result = bench(**kwargs)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from impresslearn.data import list_datasets, load_dataset, resolve_data_root
    from impresslearn.data.datasets import OPTIONAL_DATASETS
    from impresslearn.data.fetch import fetch

    if args.data_command == "fetch":
        root = resolve_data_root(args.data_root, os.environ, create=True)
        result = fetch(
            args.name, root, mirror=args.mirror, force=args.force, progress=not args.quiet
        )
        if result.already_present:
            print(
                f"{args.name}: already present under {result.folder} and verified; nothing "
                "downloaded (--force downloads it again)"
            )
        else:
            print(
                f"{args.name}: {result.downloaded_bytes / 1e6:.1f} MB downloaded, verified, "
                f"in {result.folder}"
            )
        return 0
    root = resolve_data_root(args.data_root, os.environ)
    print(f"data root: {root}")
    failed = 0
    for name in args.names or list_datasets():
        try:
            data = load_dataset(name, root)
        except ImpressLearnError as error:
            if name in OPTIONAL_DATASETS and not args.names:
                print(f"  {name}: not usable, optional ({OPTIONAL_DATASETS[name]}): {error}")
                continue
            failed += 1
            print(f"  {name}: NOT USABLE: {error}")
            continue
        print(
            f"  {name}: ok, {len(data.train)} train / {len(data.test)} test images, "
            f"{data.num_classes} classes"
        )
    return 1 if failed else 0


def file_system_error(e: OSError) -> str:
    """One line for an error of the file system (a path that cannot be written, a full disk),
    saying what to do; a run's last complete checkpoint is never touched by a failed write."""
    path = f" {e.filename}" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left on the device (writing{path or ' a file'}). Files are written "
            "atomically, so the run's last complete checkpoint is kept: free some space, then "
            "continue with `impresslearn run --resume DIR`"
        )
    reason = e.strerror or type(e).__name__
    return (
        f"cannot use{path or ' a path'}: {reason}. Check the path and its permissions "
        "(--out, --data-root, --plot, --config), or choose another; a run stopped by it keeps "
        "its last complete checkpoint and continues with `impresslearn run --resume DIR`"
    )


COMMANDS = {
    "data": _cmd_data,
    "run": _cmd_run,
    "list": _cmd_list,
    "show": _cmd_show,
    "bench": _cmd_bench,
    "compare": _cmd_compare,
    "eval": _cmd_eval,
}


def _keep_freed_buffers() -> None:
    """Ask glibc to keep freed buffers of a few MB in the heap.

    By default glibc returns every freed allocation above ~1 MB to the operating system and
    page-faults it back on the next training step; masked layers allocate several weight-sized
    temporaries per step, so this costs them ~20% of a LeNet step. Process-wide, hence here in the
    entry point and not in the library.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 32 * 2**20)
    libc.mallopt(m_trim_threshold, 128 * 2**20)
    libc.mallopt(m_top_pad, 64 * 2**20)


def _join_processes(args: argparse.Namespace) -> tuple[int, int] | None:
    """Join the ``torch.distributed`` process group this process was launched in, by ``torchrun``
    (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) or by SLURM's ``srun``
    (``SLURM_NTASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID``; the batch script exports
    ``MASTER_ADDR`` and ``MASTER_PORT``). Process i uses ``cuda:LOCAL_RANK`` (nccl) when CUDA is
    present, else the CPU (gloo). Returns (rank, processes), or None for a single process."""
    env = os.environ
    if "WORLD_SIZE" not in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        if "MASTER_ADDR" not in env:
            raise ImpressLearnError(
                "under srun, export MASTER_ADDR (the first node's host name, e.g. from "
                "`scontrol show hostnames $SLURM_JOB_NODELIST | head -n1`) and MASTER_PORT in the "
                "batch script"
            )
        env.setdefault("MASTER_PORT", "29500")
        env["WORLD_SIZE"], env["RANK"] = env["SLURM_NTASKS"], env["SLURM_PROCID"]
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if args.command not in ("run", "eval"):
        raise ImpressLearnError(
            f"`impresslearn {args.command}` runs in one process: launch it without torchrun / srun "
            "(run and eval use several)"
        )
    import torch
    import torch.distributed as dist

    local = int(env.get("LOCAL_RANK", "0"))
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        args.device = f"cuda:{local}"
    use_nccl = str(args.device).startswith("cuda")
    if use_nccl:
        torch.cuda.set_device(torch.device(args.device))
    # A peer that dies is noticed at once (its connection closes, and torchrun stops the rest);
    # the timeout only bounds a process that hangs.
    dist.init_process_group("nccl" if use_nccl else "gloo", timeout=timedelta(minutes=10))
    return dist.get_rank(), world


def main(argv: list[str] | None = None) -> int:
    _keep_freed_buffers()
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False) or getattr(args, "json", False)
    try:
        group = _join_processes(args)
    except ImpressLearnError as e:
        print(f"impresslearn: error: {e}", file=sys.stderr)
        return 2
    if group is not None and group[0] != 0:
        # Rank 0 reports; the others only warn, with no progress bars and no tables.
        quiet = args.quiet = True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s" if group is None else f"[rank {group[0]}] %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        code = COMMANDS[args.command](args)
        if group is not None:
            # Every process waits for the others (rank 0 writes the results last) before the
            # group is torn down: a process that leaves early can abort its peers' transport.
            import torch.distributed as dist

            dist.barrier()
        return code
    except (ImpressLearnError, OSError) as e:  # a user's error, or the file system's
        if args.debug:
            raise
        where = "" if group is None else f"process {group[0]} of {group[1]}: "
        message = file_system_error(e) if isinstance(e, OSError) else e
        print(f"impresslearn: error: {where}{message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("impresslearn: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as e:
        if group is None or args.debug:
            raise
        # A collective failed: another process died or hung. The last complete checkpoint stays.
        print(
            f"impresslearn: error: process {group[0]} of {group[1]} lost contact with the run's "
            f"other processes ({str(e).splitlines()[0][:200]}); the run stops. Its last complete "
            "checkpoint is kept: resume it with `impresslearn run --resume DIR`, on any number of "
            "processes",
            file=sys.stderr,
        )
        return 1
    finally:
        if group is not None:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
