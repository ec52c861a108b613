"""Train the classifier through Hugging Face Accelerate.

One GPU, bf16 mixed precision::

    python examples/accelerate_train.py --mixed-precision bf16

Several GPUs (one process per GPU, DistributedDataParallel)::

    accelerate launch --multi_gpu --num_processes 4 examples/accelerate_train.py

On a CPU-only machine it runs a single process on the CPU.
"""

import argparse
import sys

import numpy as np

try:
    from accelerate import Accelerator
except ImportError:
    sys.exit('accelerate_train.py needs Hugging Face Accelerate: pip install -e ".[accelerate]"')
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sk_softreg.accelerate import AcceleratedSoftRegCNNClassifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--accumulate", type=int, default=1, help="gradient accumulation steps")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    accelerator = Accelerator(
        mixed_precision=args.mixed_precision, gradient_accumulation_steps=args.accumulate
    )
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)
    clf = AcceleratedSoftRegCNNClassifier(
        accelerator=accelerator,
        lambda1=1e-5,
        alpha=0.1,
        max_epochs=args.epochs,
        random_state=0,
        verbose=1,
    )
    clf.fit(X_train, y_train)
    accuracy = clf.score(X_test, y_test)
    accelerator.print(f"test accuracy {accuracy:.3f}, sparsity {clf.sparsity_:.3f}")


if __name__ == "__main__":
    main()
