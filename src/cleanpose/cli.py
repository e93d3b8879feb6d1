"""The single `cleanpose` command; each subcommand is a thin function over the library.

Every subcommand registers itself through one `_add_<name>(subparsers)` function listed in
`_SUBCOMMANDS`; the parser it adds sets `handler` to a function `(args) -> int` (the exit status).
Errors that cleanpose raises on purpose (`CleanposeError`) are printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from cleanpose import __version__
from cleanpose.errors import CleanposeError

logger = logging.getLogger("cleanpose")


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("cleanpose")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="cleanpose",
        description="Category-level 6D object pose and size estimation from RGB-D (CleanPose).",
    )
    parser.add_argument("--version", action="version", version=f"cleanpose {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    _setup_logging(args.quiet)
    try:
        return int(args.handler(args) or 0)
    except CleanposeError as error:
        print(f"cleanpose {args.command}: error: {error}", file=sys.stderr)
        return 2


def _run_data_check(args: argparse.Namespace) -> int:
    from cleanpose.data.check import check_dataset

    report = check_dataset(args.dir, format=args.format, limit=args.limit, progress=not args.quiet)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _add_data(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect and validate datasets")
    data_commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    check = data_commands.add_parser("check", help="validate a dataset tree; exit status 1 when an error is found")
    check.add_argument("dir", help="dataset root (NOCS after DPDN preprocessing, or HouseCat6D)")
    check.add_argument("--format", choices=("nocs", "housecat6d"), default=None, help="default: detect")
    check.add_argument("--limit", type=int, default=None, help="check at most this many frames per split")
    check.set_defaults(handler=_run_data_check)
    prepare = data_commands.add_parser(
        "prepare", help="NOCS downloads -> the preprocessed layout (labels, lists, point models), as SPD/DPDN make it"
    )
    prepare.add_argument("--raw", required=True, help="folder of the unpacked NOCS downloads")
    prepare.add_argument("--out", required=True, help="prepared dataset root to create (the reference data/ folder)")
    prepare.add_argument(
        "--splits",
        default=None,
        help="comma-separated subset of camera_train,camera_val,real_train,real_test (default all)",
    )
    prepare.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    prepare.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the RANSAC and point-sampling streams")
    prepare.set_defaults(handler=_run_data_prepare)


def _run_data_prepare(args: argparse.Namespace) -> int:
    from cleanpose.data.prepare import prepare

    splits = tuple(args.splits.split(",")) if args.splits else None
    summary = prepare(
        args.raw,
        args.out,
        splits=splits,
        workers=args.workers,
        resume=args.resume,
        seed=args.seed,
        progress=not args.quiet,
    )
    for split in summary.splits:
        print(
            f"{split}: {summary.frames[split]} frames listed, {summary.usable[split]} usable, "
            f"{summary.labelled[split]} labelled, {summary.skipped[split]} skipped"
        )
    print(f"{summary.models} point models; {summary.frames_per_second:.1f} frames/s; report: {summary.report}")
    return 0


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score result pickles with the official NOCS / HouseCat6D metrics",
        description=(
            "Score per-image result pickles with the official NOCS / HouseCat6D pose metrics (3D IoU APs, "
            "both the official NOCS IoU and the axis-aligned one, and n-degree m-cm APs); print the table and "
            "write metrics.json, metrics.csv, metrics.md and AP curve PNGs. WARNING: loading a pickle executes "
            "code stored in it; only evaluate result pickles you trust (.npz results archives run no code)."
        ),
    )
    parser.add_argument(
        "--results",
        required=True,
        metavar="PATH",
        help="a results archive (.npz, as cleanpose test writes; read without pickle), a folder of result pickles "
        "(NOCS: results*.pkl inside it, else every *.pkl below it; HouseCat6D: every *.pkl below it) or one pickle "
        "holding a list of result dicts",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for metrics.json/.csv/.md and the curves")
    parser.add_argument("--dataset", choices=["nocs", "housecat6d"], default="nocs", help="class table (default: nocs)")
    parser.add_argument(
        "--tie-order",
        choices=("reference", "stable"),
        default="reference",
        help="order of equal scores, IoUs and pose errors: 'reference' = the official code's np.argsort (NumPy's "
        "generic introsort, the same on every machine; default), 'stable' = among equal scores the later first",
    )
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from cleanpose.metrics import evaluate_results, format_markdown_table, load_results, write_report

    loaded = load_results(args.results, args.dataset, progress=not args.quiet)
    metrics = evaluate_results(loaded.results, args.dataset, origins=loaded.origins, tie_order=args.tie_order)
    write_report(metrics, args.out)
    print(format_markdown_table(metrics), end="")
    logger.info("wrote metrics.json, metrics.csv, metrics.md and curves to %s", args.out)
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from cleanpose.metrics import compare_runs, format_comparison_markdown, write_comparison

    comparison = compare_runs(args.runs, bootstrap=args.bootstrap, seed=args.seed, progress=not args.quiet)
    print(format_comparison_markdown(comparison), end="")
    if args.out is not None:
        write_comparison(comparison, args.out)
        logger.info("wrote compare.md, compare.csv and compare.png to %s", args.out)
    return 0


def _add_compare(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare evaluated runs: seed groups (mean ± std) and bootstrap intervals",
        description=(
            "One table of the headline APs of several runs (test folders written by cleanpose test, or metrics.json "
            "files). Runs whose config.yaml differs only in run.seed (and run.out_dir) are grouped into mean ± std "
            "(n). --bootstrap N "
            "resamples the test images N times (the same resamples for every run; needs each run's results.npz) and "
            "gives 95 % intervals for each run and for its difference to the first run. Runs evaluated on different "
            "image sets are refused."
        ),
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="test folder or metrics.json; the first is the baseline")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N", help="image resamples (default 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    parser.add_argument("--out", default=None, metavar="DIR", help="also write compare.md, compare.csv, compare.png")
    parser.set_defaults(handler=_run_compare)


def _run_results_convert(args: argparse.Namespace) -> int:
    from cleanpose.metrics import convert_results

    count = convert_results(args.input, args.output, args.dataset)
    print(f"converted {count} images to {args.output}")
    return 0


def _add_results(subparsers: argparse._SubParsersAction) -> None:
    results = subparsers.add_parser("results", help="result files: convert pickles to .npz archives and back")
    commands = results.add_subparsers(dest="results_command", metavar="RESULTS_COMMAND", required=True)
    convert = commands.add_parser(
        "convert",
        help="convert result pickles into a .npz results archive, or an archive into pickles",
        description=(
            "IN is a .npz results archive or result pickles (a folder or one file; WARNING: loading a pickle "
            "executes code stored in it). OUT is a .npz file (from pickles), a .pkl file (one pickle holding "
            "the list of result dicts) or a folder (one pickle per image, named as in the archive)."
        ),
    )
    convert.add_argument("input", metavar="IN", help="archive or pickles to read")
    convert.add_argument("output", metavar="OUT", help="archive, pickle file or folder to write")
    convert.add_argument(
        "--dataset",
        choices=("nocs", "housecat6d"),
        default="nocs",
        help="which pickles a folder holds (docs/metrics.md §1.2; default nocs)",
    )
    convert.set_defaults(handler=_run_results_convert)


def _run_synth(args: argparse.Namespace) -> int:
    from cleanpose.data.synth import SensorNoise, generate, write_preview
    from cleanpose.errors import UsageError

    image_size = None
    if args.image_size is not None:
        try:
            width, height = (int(part) for part in args.image_size.lower().split("x"))
        except ValueError:
            raise UsageError(f"--image-size must look like 640x480; got {args.image_size!r}") from None
        image_size = (width, height)
    noise = SensorNoise(enabled=not args.no_noise)
    meshes = backgrounds = None
    if args.models is None and (args.test_fraction is not None or args.procedural_fraction is not None):
        raise UsageError("--test-fraction and --procedural-fraction apply to --models meshes; pass --models DIR")
    if args.models is not None:
        from cleanpose.data.synth.user_library import mesh_settings

        meshes = mesh_settings(
            args.models,
            args.format,
            0.25 if args.test_fraction is None else args.test_fraction,
            args.procedural_fraction or 0.0,
            args.skip_bad,
        )
    if args.backgrounds is not None:
        from cleanpose.data.synth.backgrounds import scan_backgrounds

        backgrounds = scan_backgrounds(args.backgrounds, args.skip_bad)
    if args.preview:
        path = write_preview(
            args.out / "preview.png" if args.out.suffix != ".png" else args.out,
            format=args.format,
            frames=args.preview_frames,
            seed=args.seed,
            image_size=image_size,
            noise=noise,
            meshes=meshes,
            backgrounds=backgrounds,
        )
        print(path)
        return 0
    splits = tuple(args.splits.split(",")) if args.splits else None
    summary = generate(
        args.out,
        format=args.format,
        scenes=args.scenes,
        frames_per_scene=args.frames_per_scene,
        seed=args.seed,
        workers=args.workers,
        image_size=image_size,
        splits=splits,
        noise=noise,
        overwrite=args.overwrite,
        progress=not args.quiet,
        meshes=meshes,
        backgrounds=backgrounds,
        raw=args.raw,
    )
    print(
        f"wrote {summary.frames} frames ({summary.labelled_frames} labelled) of {summary.scenes} scenes and "
        f"{summary.models} models to {summary.out_dir} in {summary.seconds:.1f} s "
        f"({summary.frames_per_second:.2f} frames/s)"
    )
    return 0


def _add_synth(subparsers: argparse._SubParsersAction) -> None:
    from pathlib import Path

    synth = subparsers.add_parser("synth", help="write a synthetic NOCS- or HouseCat6D-format dataset")
    synth.add_argument(
        "--out",
        type=Path,
        required=True,
        help="dataset root to create (with --preview: folder or .png file of the preview)",
    )
    synth.add_argument("--format", default="nocs", help="nocs or housecat6d (default nocs)")
    synth.add_argument("--scenes", type=int, default=1, help="scenes per split (default 1)")
    synth.add_argument("--frames-per-scene", type=int, default=10, help="frames per scene (default 10)")
    synth.add_argument("--seed", type=int, default=0, help="dataset seed; equal seeds give identical files")
    synth.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    synth.add_argument(
        "--splits",
        default=None,
        help="comma-separated subset: camera_train,camera_val,real_train,real_test (nocs) or "
        "train,test (housecat6d); default all",
    )
    synth.add_argument("--image-size", default=None, help="WxH, default 640x480 (nocs) / 1096x852 (housecat6d)")
    synth.add_argument("--no-noise", action="store_true", help="perfect depth (no sensor noise model)")
    synth.add_argument("--overwrite", action="store_true", help="replace a previous synthetic dataset in --out")
    synth.add_argument(
        "--raw",
        action="store_true",
        help="nocs: write the raw layout of the NOCS downloads (input of `data prepare`), no labels",
    )
    synth.add_argument(
        "--preview", action="store_true", help="only write a PNG grid (colour, depth, mask, NOCS) of a few frames"
    )
    synth.add_argument("--preview-frames", type=int, default=4, help="rows of the preview grid (default 4)")
    synth.add_argument(
        "--models",
        type=Path,
        default=None,
        help="render your own meshes: DIR/<category>/<instance>.{obj,ply,glb,gltf}, DIR/models.yaml, "
        "or a NOCS obj_models folder (docs/synth_meshes.md)",
    )
    synth.add_argument(
        "--backgrounds", type=Path, default=None, help="folder of JPG/PNG photos composited behind the scenes"
    )
    synth.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="with --models: fraction of each category's meshes held out for the test splits "
        "(default 0.25; 0 = every mesh in every split)",
    )
    synth.add_argument(
        "--procedural-fraction",
        type=float,
        default=None,
        help="with --models: share of procedural instances per category, in [0, 1) (default 0)",
    )
    synth.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out (log and count) unreadable meshes, empty category folders and bad photos instead of stopping",
    )
    synth.set_defaults(handler=_run_synth)


def _run_convert_checkpoint(args: argparse.Namespace) -> int:
    from cleanpose.errors import UsageError
    from cleanpose.models.convert_checkpoint import convert_official_checkpoint, convert_to_official

    if args.source == "official":
        convert_official_checkpoint(args.input, args.output, config_path=args.config, queue_path=args.queue)
    else:
        if args.config is not None:
            raise UsageError("--config applies to --from official only (our checkpoints carry their config)")
        convert_to_official(args.input, args.output, queue_path=args.queue)
    logger.info("wrote %s", args.output)
    return 0


def _add_convert_checkpoint(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-checkpoint",
        help="convert a reference CleanPose checkpoint (and queue pickle) to ours, or back",
        description=(
            "--from official: read the reference state dict IN (750 keys for dino, 733 for resnet) and write the "
            "cleanpose checkpoint OUT, with the network described by --config (a reference YAML; default: "
            "camera_real with rgb_backbone and cat_num inferred from the keys) and the queue read from --queue "
            "(the reference tensor_list.pkl). --from ours: write our checkpoint IN as a reference state dict OUT "
            "and, with --queue, its queue as a reference pickle."
        ),
    )
    parser.add_argument("input", metavar="IN", help="checkpoint to read")
    parser.add_argument("output", metavar="OUT", help="checkpoint to write")
    parser.add_argument(
        "--from",
        dest="source",
        choices=("official", "ours"),
        default="official",
        help="layout of IN (default official)",
    )
    parser.add_argument("--config", metavar="REF.yaml", default=None, help="reference config (its pose_net section)")
    parser.add_argument(
        "--queue",
        metavar="QUEUE.pkl",
        default=None,
        help="reference queue pickle to read (--from official) or to write (--from ours)",
    )
    parser.set_defaults(handler=_run_convert_checkpoint)


def _load_train_config(args: argparse.Namespace):
    from cleanpose.config import TrainConfig, load_config

    return load_config(args.config, TrainConfig, overrides=args.set or ())


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="C", help="run config YAML (see configs/)")
    parser.add_argument(
        "--set",
        action="extend",
        nargs="+",
        metavar="KEY=VALUE",
        help="override config values, e.g. --set run.epochs=2 data.workers=0 (repeatable)",
    )


def _run_queue(args: argparse.Namespace) -> int:
    from cleanpose.data.build import build_training_datasets
    from cleanpose.engine.queue_extraction import extract_queue, write_queue_file
    from cleanpose.engine.train import resolve_device

    config = _load_train_config(args)
    queue = extract_queue(
        config,
        build_training_datasets(config),
        resolve_device(config.run.device),
        teacher_checkpoint=config.run.queue_teacher_checkpoint,
    )
    write_queue_file(args.out, queue, source=str(args.config))
    logger.info("wrote the initial queue of shape %s to %s", "x".join(map(str, queue.shape)), args.out)
    return 0


def _add_queue(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("queue", help="extract the initial confounder queue from teacher features")
    _add_config_arguments(parser)
    parser.add_argument("--out", required=True, metavar="queue.pt", help="queue file to write")
    parser.set_defaults(handler=_run_queue)


def _run_teacher_pretrain(args: argparse.Namespace) -> int:
    from cleanpose.engine.teacher_pretrain import TeacherPretrainSettings, pretrain_teacher

    settings = TeacherPretrainSettings(
        teacher=args.teacher,
        format=args.format,
        instances_per_category=args.instances_per_category,
        points=args.points,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        workers=args.workers,
    )
    pretrain_teacher(args.out, settings, device=args.device, progress=not args.quiet)
    return 0


def _add_teacher(subparsers: argparse._SubParsersAction) -> None:
    teacher = subparsers.add_parser("teacher", help="offline substitutes for the ULIP teacher weights")
    teacher_commands = teacher.add_subparsers(dest="teacher_command", metavar="TEACHER_COMMAND", required=True)
    parser = teacher_commands.add_parser(
        "pretrain",
        help="pretrain a teacher on the synthetic shape library and save it in the ULIP checkpoint layout",
        description=(
            "Train the PointBERT (or PointNet2-SSG) teacher at reference size on clouds of synthetic shape "
            "instances (category classification + InfoNCE between two augmented views) and write OUT in the "
            "official ULIP checkpoint layout, for distillation.teacher_checkpoint or run.queue_teacher_checkpoint."
        ),
    )
    parser.add_argument("--out", required=True, metavar="OUT.pt", help="checkpoint file to write")
    parser.add_argument(
        "--teacher", choices=("pointbert", "pointnet2_ssg"), default="pointbert", help="default pointbert"
    )
    parser.add_argument("--format", choices=("nocs", "housecat6d"), default="nocs", help="category set (default nocs)")
    parser.add_argument(
        "--instances-per-category",
        type=int,
        default=None,
        metavar="N",
        help="fixed pool of N instances per category (default: fresh instance per sample)",
    )
    parser.add_argument("--points", type=int, default=1024, help="points per cloud (default 1024)")
    parser.add_argument("--steps", type=int, default=2000, help="optimisation steps (default 2000)")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per step, 2 views each (default 32)")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak AdamW learning rate (default 5e-4)")
    parser.add_argument("--seed", type=int, default=0, help="equal seeds give identical files (default 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes (default 0)")
    parser.set_defaults(handler=_run_teacher_pretrain)


def _run_train(args: argparse.Namespace) -> int:
    from cleanpose.engine.train import train

    checkpoint = train(_load_train_config(args), resume=args.resume, quiet=args.quiet)
    logger.info("checkpoint: %s", checkpoint)
    return 0


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a CleanPose network (one process, or under torchrun)")
    _add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from run.out_dir/checkpoints/last.pt")
    parser.set_defaults(handler=_run_train)


def _run_test(args: argparse.Namespace) -> int:
    from cleanpose.config import save_config
    from cleanpose.data.build import build_run_test_dataset
    from cleanpose.engine.test import evaluate_and_report, predict_dataset
    from cleanpose.engine.train import resolve_device
    from cleanpose.metrics import format_markdown_table
    from cleanpose.models import load_checkpoint

    config = _load_train_config(args)
    device = resolve_device(config.run.device)
    model = load_checkpoint(args.checkpoint).to(device)
    dataset = build_run_test_dataset(config, args.masks)
    results = predict_dataset(
        model,
        dataset,
        f"{args.out}/results",
        device=device,
        seed=config.run.seed,
        quiet=args.quiet,
        archive=f"{args.out}/results.npz",
    )
    metrics = evaluate_and_report(results, config.data.format, args.out)
    save_config(config, f"{args.out}/config.yaml")  # cleanpose compare groups runs by it
    print(format_markdown_table(metrics), end="")
    return 0


def _add_test(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "test", help="predict a test set, write result pickles and results.npz, print the metrics"
    )
    _add_config_arguments(parser)
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="cleanpose checkpoint")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for results/ and the metrics")
    parser.add_argument(
        "--masks",
        choices=("segmentation", "gt"),
        default="segmentation",
        help="detections: the segmentation results (default) or ground-truth masks",
    )
    parser.set_defaults(handler=_run_test)


def _run_visualize(args: argparse.Namespace) -> int:
    from cleanpose.engine.visualize import visualize_results

    written = visualize_results(args.results, args.data, args.out, dataset=args.dataset, limit=args.limit)
    print(f"{len(written)} pictures in {args.out}")
    return 0


def _add_visualize(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("visualize", help="draw predicted and ground-truth boxes side by side")
    parser.add_argument(
        "--results",
        required=True,
        metavar="PATH",
        help="results written by cleanpose test: DIR/results.npz (read without pickle) or DIR/results",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="dataset root the results refer to")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG pictures")
    parser.add_argument("--dataset", choices=("nocs", "housecat6d"), default="nocs")
    parser.add_argument("--limit", type=int, default=None, help="draw at most this many images")
    parser.set_defaults(handler=_run_visualize)


def _run_demo(args: argparse.Namespace) -> int:
    from cleanpose.engine.demo import run_demo
    from cleanpose.metrics import format_markdown_table

    metrics = run_demo(args.out, args.config, quick=args.quick, quiet=args.quiet)
    print(format_markdown_table(metrics), end="")
    mean = metrics.headline()["mean"]
    print(
        f"official mean over all {len(metrics.class_names)} classes: IoU50 {mean['iou50']:.1f}, "
        f"10deg5cm {mean['10deg5cm']:.1f}, 5deg2cm {mean['5deg2cm']:.1f} (official NOCS IoU)"
    )
    print(f"everything is in {args.out}: data/, train/ (loss_curve.png, tensorboard/), test/, pictures/")
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="synthesize data, train, test and report, on the CPU")
    parser.add_argument("--out", default="runs/demo", metavar="DIR", help="demo folder (replaced on rerun)")
    parser.add_argument("--config", default="configs/demo-cpu.yaml", metavar="C", help="run config")
    parser.add_argument("--quick", action="store_true", help="the same chain on tiny sizes (about a minute)")
    parser.set_defaults(handler=_run_demo)


def _run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cleanpose.engine.predict import Predictor
    from cleanpose.engine.predict_io import (
        FrameFiles,
        find_frames,
        predict_files,
        read_intrinsics,
        use_segmentation_results,
    )
    from cleanpose.errors import UsageError

    if (args.frames is None) == (args.rgb is None):
        raise UsageError("give either --frames DIR or one frame (--rgb, --depth, --masks)")
    if args.rgb is not None and (args.depth is None or args.masks is None):
        raise UsageError("one frame needs --rgb, --depth and --masks")
    if args.segmentation is not None and args.frames is None:
        raise UsageError("--segmentation goes with --frames (one frame takes the pickle as --masks)")
    if args.categories is not None and args.labels is not None:
        raise UsageError("give --categories or --labels, not both")
    predictor = Predictor.from_checkpoint(
        args.checkpoint,
        device=args.device,
        precision=args.precision,
        cuda_graph=args.cuda_graph,
        official_config=args.official_config,
        official_queue=args.official_queue,
    )
    intrinsics = read_intrinsics(args.intrinsics)
    categories = args.categories.split(",") if args.categories else None
    if args.rgb is not None:
        name = Path(args.rgb).stem.removesuffix("_color")
        frames = [
            FrameFiles(
                name, Path(args.rgb), Path(args.depth), Path(args.masks), Path(args.labels) if args.labels else None
            )
        ]
    else:
        frames = find_frames(args.frames)
        if args.segmentation:
            use_segmentation_results(frames, args.segmentation)
        if args.labels:
            for files in frames:
                files.labels = Path(args.labels)
    summary = predict_files(
        predictor,
        frames,
        intrinsics,
        args.out,
        checkpoint=str(args.checkpoint),
        categories=categories,
        depth_scale=args.depth_scale,
        single=args.rgb is not None,
        quiet=args.quiet,
    )
    print(
        f"{summary['objects'].get('ok', 0)} objects posed, {summary['objects'].get('skipped', 0)} skipped "
        f"{summary['skipped']} in {len(frames)} frame(s); outputs in {args.out}"
    )
    return 0


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="poses of the objects in your own RGB-D frames (JSON + overlay pictures)",
        description="One frame (--rgb --depth --masks) writes OUT/poses.json and OUT/overlay.png; --frames DIR "
        "(rgb/ depth/ masks/ subfolders or NOCS *_color.png naming) writes one JSON and overlay per frame and "
        "OUT/summary.json. --masks is an instance-id PNG (0 and 255 background) or the reference's "
        "segmentation-result pickle of the frame.",
    )  # fmt: skip
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="cleanpose or official checkpoint")
    parser.add_argument("--rgb", metavar="PNG", help="colour image")
    parser.add_argument("--depth", metavar="PNG", help="depth image (uint16, see --depth-scale)")
    parser.add_argument("--masks", metavar="PNG|PKL", help="instance-id mask PNG or segmentation-result pickle")
    parser.add_argument("--frames", metavar="DIR", help="a folder of frames instead of --rgb/--depth/--masks")
    parser.add_argument(
        "--segmentation",
        metavar="DIR",
        help="with --frames: masks from the reference's results_*_<frame>.pkl files in DIR",
    )
    parser.add_argument(
        "--intrinsics",
        required=True,
        metavar="K",
        help="fx,fy,cx,cy | K.json | K.txt (4 or 9 numbers) | nocs-real | nocs-camera",
    )
    parser.add_argument("--categories", metavar="A,B,...", help="category per mask id, in ascending id order")
    parser.add_argument("--labels", metavar="FILE", help="{id: category} JSON, or a NOCS _meta.txt")
    parser.add_argument("--depth-scale", type=float, default=1000.0, help="depth units per metre (default 1000: mm)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="CUDA: replay the network from a CUDA graph per object count (same poses, less launch overhead)",
    )
    parser.add_argument("--official-config", metavar="REF.yaml", help="reference config of an official checkpoint")
    parser.add_argument("--official-queue", metavar="QUEUE.pkl", help="reference queue of an official checkpoint")
    parser.set_defaults(handler=_run_predict)


# Subcommands in help order; each adds its parser and sets `handler`. Keep this list last.
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_demo,
    _add_synth,
    _add_data,
    _add_teacher,
    _add_queue,
    _add_train,
    _add_test,
    _add_predict,
    _add_evaluate,
    _add_compare,
    _add_results,
    _add_visualize,
    _add_convert_checkpoint,
]
