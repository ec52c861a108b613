"""The ``sk-softreg`` command line: demo, fit, predict, info and export.

Run ``sk-softreg --help`` (or ``python -m sk_softreg.cli --help``).
Errors in the user's input (a missing or empty folder, a file that is not a
model) print one line to stderr and exit with status 2.
"""

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

PROG = "sk-softreg"


class CLIError(Exception):
    """An input error reported as one line, exit status 2."""


def _image_size(text):
    parts = text.lower().replace(",", "x").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(size) not in (1, 2) or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW of positive ints, got {text!r}")
    return size[0] if len(size) == 1 else size


def _augment(text):
    """``DEGREES[,SHIFT]``: a random rotation within ±DEGREES and a shift of up to
    SHIFT times the image size (default 0.1), drawn per training image."""
    parts = text.split(",")
    try:
        degrees, shift = float(parts[0]), float(parts[1]) if len(parts) > 1 else 0.1
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"expected DEGREES[,SHIFT], got {text!r}") from None
    if len(parts) > 2 or degrees < 0 or not 0 <= shift <= 1:
        raise argparse.ArgumentTypeError(
            f"expected DEGREES >= 0 and SHIFT in [0, 1] as DEGREES[,SHIFT], got {text!r}"
        )
    return degrees, shift


def _parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="Soft-regularized (L1, L2, KL) image classifiers from the shell."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="grid search of lambda1, lambda2, alpha on sklearn digits")
    demo.add_argument("--epochs", type=int, default=None, help="epochs per fit (default 30)")
    demo.add_argument("--cv", type=int, default=3)
    demo.add_argument("--n-jobs", type=int, default=2, help="parallel fits (default 2)")
    demo.add_argument("--device", default="auto")
    demo.add_argument("-o", "--output", default="digits_model.joblib")

    fit = sub.add_parser("fit", help="train on a folder of class sub-folders of images")
    fit.add_argument("image_dir")
    fit.add_argument("-o", "--output", required=True, help="model file to write (joblib)")
    fit.add_argument("--lambda1", type=float, default=0.0, help="L1 weight penalty")
    fit.add_argument("--lambda2", type=float, default=0.0, help="L2 weight penalty")
    fit.add_argument("--alpha", type=float, default=0.0, help="KL output penalty")
    fit.add_argument("--kl", default="label_smoothing",
                     choices=["label_smoothing", "confidence_penalty"])
    fit.add_argument("--epochs", type=int, default=30)
    fit.add_argument("--batch-size", type=int, default=64)
    fit.add_argument("--lr", type=float, default=None)
    fit.add_argument("--image-size", type=_image_size, default=None,
                     help="resize images to N x N or HxW (needed if sizes differ)")
    fit.add_argument("--grayscale", action="store_true", help="read images as one channel")
    fit.add_argument("--augment", type=_augment, nargs="?", const=(8.0, 0.1), default=None,
                     metavar="DEGREES[,SHIFT]",
                     help="augment each training image with a random rotation within "
                     "±DEGREES and a shift of up to SHIFT x its size (torchvision "
                     "RandomAffine); --augment alone means 8,0.1")
    fit.add_argument("--module", default=None,
                     help="torchvision model name, e.g. resnet18 (default: the built-in CNN)")
    fit.add_argument("--device", default="auto")
    fit.add_argument("--random-state", type=int, default=0)
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    predict = sub.add_parser(
        "predict", help="predict a folder of images or a .npy array (multilabel models: the "
        "labels present, separated by spaces)")
    predict.add_argument("model")
    predict.add_argument("input", help="folder of images (searched recursively) or .npy file")
    predict.add_argument("-o", "--output", default=None, help="CSV file (default: stdout)")

    info = sub.add_parser("info", help="show a model's parameters, classes and history")
    info.add_argument("model")

    export = sub.add_parser(
        "export", help="write a fitted model (joblib) as ONNX, to predict without torch")
    export.add_argument("model", help="a fitted classifier or regressor saved with joblib")
    export.add_argument("output", nargs="?", help="the .onnx file to write")
    # -o as in the other commands; the positional form stays
    export.add_argument("-o", "--output", dest="output_option", metavar="OUTPUT",
                        help="the .onnx file to write (instead of the positional argument)")
    return parser


def main(argv=None):
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : list of str or None, default=None
        Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    int
        0 on success, 2 on an input error (reported on one line).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "export":
        if (args.output is None) == (args.output_option is None):
            parser.error("export: give the .onnx file to write once, as OUTPUT or as -o OUTPUT")
        args.output = args.output or args.output_option
    try:
        if getattr(args, "output", None) is not None:
            _check_output(args.output)  # before a fit or a search spends its time
        return _COMMANDS[args.command](args)
    except (CLIError, OSError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


def _check_output(path):
    """Raise :class:`CLIError` where ``path`` cannot be written as a new or replaced file."""
    path = Path(path)
    if path.is_dir():
        raise CLIError(f"output {str(path)!r} is a folder; give a file name")
    if not path.parent.is_dir():
        raise CLIError(f"the folder of output {str(path)!r} does not exist")


def _demo(args):
    from ._demo import run_demo

    run_demo(max_epochs=args.epochs, cv=args.cv, n_jobs=args.n_jobs, device=args.device,
             output=args.output)
    return 0


def _fit(args):
    import joblib

    from ._classifier import SoftRegCNNClassifier
    from .datasets import load_image_folder

    if not Path(args.image_dir).is_dir():
        raise CLIError(f"image folder {args.image_dir!r} does not exist or is not a folder")
    start = time.perf_counter()
    X, y, _ = load_image_folder(args.image_dir, image_size=args.image_size,
                                grayscale=args.grayscale)
    load_s = time.perf_counter() - start
    params = {"module": args.module, "lambda1": args.lambda1, "lambda2": args.lambda2,
              "alpha": args.alpha, "kl": args.kl, "max_epochs": args.epochs,
              "batch_size": args.batch_size, "device": args.device,
              "random_state": args.random_state, "verbose": 0 if args.quiet else 1}
    if args.lr is not None:
        params["lr"] = args.lr
    if args.augment is not None:
        from torchvision.transforms import v2

        degrees, shift = args.augment
        # in a Compose, which scikit-learn's clone deep-copies (see the user guide)
        params["train_transform"] = v2.Compose(
            [v2.RandomAffine(degrees=degrees, translate=(shift, shift))]
        )
    clf = SoftRegCNNClassifier(**params)
    start = time.perf_counter()
    clf.fit(X, y)
    fit_s = time.perf_counter() - start
    joblib.dump(clf, args.output)
    accuracy = float(np.mean(clf.predict(X) == y))
    print(f"read {len(X)} images of shape {X.shape[1:]} in {load_s:.2f} s; "
          f"classes: {', '.join(map(str, clf.classes_))}")
    print(f"trained {clf.max_epochs} epochs in {fit_s:.2f} s on {clf.device}; "
          f"train accuracy {accuracy:.4f}; sparsity {clf.sparsity_:.4f}")
    print(f"saved model to {args.output}")
    return 0


def _load_model(path, any_estimator=False):
    """The fitted classifier in ``path``; with ``any_estimator``, either estimator."""
    import joblib

    from ._classifier import SoftRegCNNClassifier
    from ._regressor import SoftRegRegressor

    if not Path(path).is_file():
        raise CLIError(f"model file {path!r} does not exist or is not a file")
    try:
        model = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure: "not a model file"
        raise CLIError(f"{path!r} is not a sk_softreg model file ({type(exc).__name__})") from None
    if any_estimator:
        if not isinstance(model, (SoftRegCNNClassifier, SoftRegRegressor)) or not (
            model.__sklearn_is_fitted__()
        ):
            raise CLIError(f"{path!r} is not a fitted SoftRegCNNClassifier or SoftRegRegressor")
        return model
    if not isinstance(model, SoftRegCNNClassifier) or not hasattr(model, "classes_"):
        raise CLIError(f"{path!r} is not a fitted SoftRegCNNClassifier saved by sk-softreg fit")
    return model


def _predict(args):
    from .datasets import IMG_EXTENSIONS, _read_images

    model = _load_model(args.model)
    source = Path(args.input)
    if source.is_dir():
        files = sorted(str(p) for p in source.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        if not files:
            raise CLIError(f"image folder {args.input!r} holds no images")
        channels, height, width = model.input_shape_
        if channels not in (1, 3):
            raise CLIError(f"the model takes {channels}-channel input; pass a .npy array")
        images, kept = _read_images(files, (height, width), grayscale=channels == 1)
        if not images:
            raise CLIError(f"image folder {args.input!r} holds no readable images")
        names = [f for f, ok in zip(files, kept) if ok]
        X = np.stack(images)
    elif source.is_file() and source.suffix == ".npy":
        try:
            X = np.load(source, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CLIError(f"cannot read {args.input!r} as a .npy array ({exc})") from None
        names = [f"{source.name}[{i}]" for i in range(len(X))]
    else:
        raise CLIError(f"{args.input!r} is neither a folder of images nor a .npy file")
    proba = model.predict_proba(X)
    if getattr(model, "multilabel_", False):  # the labels present, as predict has them
        from ._multilabel import THRESHOLD

        labels = [" ".join(map(str, model.classes_[row > THRESHOLD])) for row in proba]
    else:
        labels = model.classes_[np.argmax(proba, axis=1)]
    if args.output is None:
        _write_csv(sys.stdout, model.classes_, names, labels, proba)
    else:
        with open(args.output, "w", newline="") as out:
            _write_csv(out, model.classes_, names, labels, proba)
        print(f"wrote {len(names)} predictions to {args.output}", file=sys.stderr)
    return 0


def _write_csv(out, classes, names, labels, proba):
    writer = csv.writer(out)
    writer.writerow(["file", "label", *(f"proba_{c}" for c in classes)])
    for name, label, row in zip(names, labels, proba):
        writer.writerow([name, label, *(f"{p:.6g}" for p in row)])


def _info(args):
    model = _load_model(args.model)
    print(f"model: {type(model).__name__} ({args.model})")
    params = model.get_params(deep=False)
    shown = ["module", "lambda1", "lambda2", "alpha", "kl", "penalize", "l1_method",
             "train_transform", "lr", "max_epochs", "batch_size", "random_state", "device"]
    for name in shown:
        if name in params:
            print(f"  {name} = {params[name]!r}")
    module = model.module if model.module is not None else "SoftRegCNN (default)"
    n_params = sum(p.numel() for p in model.module_.parameters())
    print(f"network: {module}, {n_params} parameters; input shape {model.input_shape_}")
    print(f"classes ({len(model.classes_)}): {', '.join(map(str, model.classes_))}")
    print(f"sparsity: {model.sparsity_:.4f} of the penalized weights are exactly zero")
    history = model.history_
    if len(history):
        first, last = history[0], history[-1]
        total = sum(row.get("dur", 0.0) for row in history)
        print(f"history: {len(history)} epochs, {total:.2f} s; train_loss "
              f"{first['train_loss']:.4f} -> {last['train_loss']:.4f}")
        terms = [f"{k}={last[k]:.4g}" for k in ("train_l1", "train_l2", "train_kl", "valid_loss")
                 if k in last]
        if terms:
            print(f"last epoch: {', '.join(terms)}")
    return 0


def _export(args):
    model = _load_model(args.model, any_estimator=True)
    try:
        model.export_onnx(args.output)
    except ImportError as exc:  # the optional extra is missing: the message names the fix
        raise CLIError(str(exc)) from None
    if hasattr(model, "classes_"):
        shape = ", ".join(str(s) for s in model.input_shape_)
        ends = f"input X (batch, {shape}) -> probabilities over {len(model.classes_)} classes"
    else:
        ends = f"input X (batch, {model.n_features_in_}) -> mean, std"
    print(f"wrote {args.output}: {type(model).__name__}, {ends}")
    return 0


_COMMANDS = {"demo": _demo, "fit": _fit, "predict": _predict, "info": _info, "export": _export}


if __name__ == "__main__":
    sys.exit(main())
