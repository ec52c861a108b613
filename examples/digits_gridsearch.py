"""Grid search over lambda1, lambda2 and alpha on scikit-learn's digits.

Run::

    python examples/digits_gridsearch.py [--out digits_model.joblib] [--n-jobs 2]

It prints the grid's cross-validation table, the refitted best model's test
accuracy and weight sparsity, and saves that model with joblib. The same job
runs as ``sk-softreg demo``.
"""

import argparse

from sk_softreg._demo import run_demo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="digits_model.joblib", help="where to save the model")
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel fits (joblib)")
    parser.add_argument("--cv", type=int, default=3, help="cross-validation folds")
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the estimator's")
    args = parser.parse_args(argv)
    return run_demo(max_epochs=args.max_epochs, cv=args.cv, n_jobs=args.n_jobs, output=args.out)


if __name__ == "__main__":
    main()
