"""What each speed lever of the training step buys: the estimator with one lever undone.

Run from the repository root::

    python benchmarks/levers.py [--repeats 5] [--epochs 10]

The workloads of ``benchmarks/run.py``:

- the training step: ``SoftRegRegressor`` on 20000x20 (module 20-64-64 without
  dropout) and ``SoftRegCNNClassifier`` on the digits, without penalties, against
  the fastest hand-written loop (the faster of Adam and ``Adam(fused=True)``);
- the penalties: ``SoftRegCNNClassifier`` on the digits with lambda1=lambda2=1e-4,
  alpha=0.1, against the same estimator with every penalty at 0, at 1 and at 2
  torch threads.

Each variant undoes exactly one lever; all variants of a workload run
interleaved (rotated order per repeat) and the table gives the median ratios,
and, less disturbed by a slow phase of a shared machine, the median over repeats
of the variant's time over its base variant's time in the same repeat (above 1:
the lever pays).
The kernel variants of the per-tensor penalty step ("L1 value by 1-norm
kernel", "previous prox kernels") are measured with the penalized tensors in
their own storage and compared with "per-tensor penalty steps", the variant
they build on; every other variant is compared with "all levers on".
"""

import argparse
import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from skorch import NeuralNet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import run  # noqa: E402  (benchmarks/run.py: data, hand-written loops, timing)

import sk_softreg._base as base  # noqa: E402
import sk_softreg._batching as batching  # noqa: E402
import sk_softreg._fused as fused  # noqa: E402
from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor  # noqa: E402


def _l1_by_norm(params):
    """The previous L1 kernel: torch's 1-norm per tensor."""
    return torch.stack(torch._foreach_norm(params, 1)).sum()


def _prox_by_foreach(params, thresholds):
    """The previous proximal step: foreach minimum/maximum with the negated thresholds."""
    with torch.no_grad():
        clipped = torch._foreach_minimum(params, thresholds)
        torch._foreach_maximum_(clipped, torch._foreach_neg(thresholds))
        torch._foreach_sub_(params, clipped)


def _thresholds_in_five_kernels(optimizer, params, lambda1):
    """The previous Adam thresholds lr·λ1 / (sqrt(v / (1 - β2^k)) + eps), five kernels."""
    with torch.no_grad():
        states = [optimizer.state[p] for p in params]
        group = optimizer.param_groups[0]
        beta2 = group["betas"][1]
        denoms = torch._foreach_div([s["exp_avg_sq"] for s in states],
                                    [1.0 - beta2 ** float(s["step"]) for s in states])
        torch._foreach_sqrt_(denoms)
        torch._foreach_add_(denoms, group["eps"])
        torch._foreach_reciprocal_(denoms)
        torch._foreach_mul_(denoms, group["lr"] * lambda1)
        return denoms


def _skorch_set_training(self, training=True):
    NeuralNet._set_training(self, training)


def _l2_through_loss(self, batch, **fit_params):
    return NeuralNet.train_step_single(self, batch, **fit_params)


def _no_decay_groups(self, optimizer):
    """No parameter group carries λ2: its gradient is added after backward."""
    return None


def _skorch_train_step(self, batch, **fit_params):
    return NeuralNet.train_step(self, batch, **fit_params)


@contextmanager
def _fit_batch_size(self):
    yield


def _loss_by_four_adds(self, y_pred, y_true, X=None, training=False):
    """The previous ``get_loss`` on this workload (unweighted, no ``lambda_features``):
    ``data + l1 + l2 + α·kl + features``, a zero tensor for each inactive term.

    It computes the cross-entropy and the KL apart, in torch's kernels, so it also
    undoes the classifier's one-node cross-entropy + KL (``_data_loss_with_kl``)."""
    data = self._data_loss(y_pred, y_true, X=X, training=training)
    if not training or not (self.lambda1 or self.lambda2 or self.alpha):
        return data
    zero = data.new_zeros(())
    state = self._step_scratch()
    params = self._penalized_params()
    with torch.no_grad():
        l1 = self.lambda1 * base.l1_penalty(params) if self.lambda1 else zero
    with torch.no_grad() if state.l2_grad_pending else torch.enable_grad():
        l2 = self.lambda2 * base.l2_penalty(params) if self.lambda2 else zero
    kl_mean = self._kl_term(y_pred, y_true).mean() if self.alpha else zero
    kl = self.alpha * kl_mean if self.alpha else zero
    loss = data + l1 + l2 + kl + zero
    if state.evaluations is not None:
        state.evaluations.append((loss, (l1, l2, kl_mean, zero), len(y_pred)))
    return loss


def _penalty_values_by_a_node(self, y_pred, y_true, offset=0.0):
    """The λ values added to the one-node cross-entropy + α·KL by a node of their own."""
    fused = SoftRegCNNClassifier._data_loss_with_kl(self, y_pred, y_true)
    if fused is None or not offset:
        return fused
    return fused[0] + offset, fused[1]


#: skorch's own per-batch bookkeeping (sk_softreg._batch_loop undone)
_SKORCH_BOOKKEEPING = {
    name: getattr(NeuralNet, name)
    for name in ("notify", "run_single_epoch", "initialize_history")
}

#: the penalized tensors in their own storage (no flat buffer, sk_softreg._flat)
_PER_TENSOR = {"_flatten_penalized": False}

#: lever -> (class attributes of the variant, estimator parameters,
#: patches {(module, name): value})
UNDO = {
    "all levers on": ({}, {}, {}),
    "no fused Adam default": ({}, {"optimizer__fused": False}, {}),
    "module.train() every batch": ({"_set_training": _skorch_set_training}, {}, {}),
    "skorch's notify, history rows, get_len": (_SKORCH_BOOKKEEPING, {}, {}),
    "optimizer.zero_grad()": (
        {"_zero_grad_optimizer": NeuralNet._zero_grad_optimizer}, {}, {}),
    "one gather per batch": ({}, {}, {(batching, "BLOCK_BYTES"): 0}),
    "skorch's train_step (closure)": ({"_optimizer_step": _skorch_train_step}, {}, {}),
    "end-of-fit residuals in fit's batches": ({"_large_eval_batches": _fit_batch_size}, {}, {}),
    "lambda2 backpropagated": ({"train_step_single": _l2_through_loss}, {}, {}),
    "lambda2 added after backward, not in weight_decay": (
        {"_l2_decay_groups": _no_decay_groups}, {}, {}),
    # numba's prox, sums and the classifier's cross-entropy + KL node, all three
    "compiled loops (numba)": ({}, {}, {(fused, "_kernels"): False}),
    "per-tensor penalty steps": (_PER_TENSOR, {}, {}),
    "L1 value by 1-norm kernel": (_PER_TENSOR, {}, {(base, "l1_penalty"): _l1_by_norm}),
    "previous prox kernels": (_PER_TENSOR, {}, {(base, "prox_l1_"): _prox_by_foreach,
                                                (base, "prox_thresholds"): _thresholds_in_five_kernels}),
    "penalty terms by four additions": ({"get_loss": _loss_by_four_adds}, {}, {}),
    "penalty values added by their own node": (
        {"_data_loss_with_kl": _penalty_values_by_a_node}, {}, {}),
}
STEP_LEVERS = ("all levers on", "no fused Adam default", "module.train() every batch",
               "skorch's notify, history rows, get_len", "optimizer.zero_grad()",
               "one gather per batch", "skorch's train_step (closure)")
MLP_LEVERS = ("end-of-fit residuals in fit's batches",)
PENALTY_LEVERS = ("all levers on", "lambda2 backpropagated",
                  "lambda2 added after backward, not in weight_decay", "compiled loops (numba)",
                  "per-tensor penalty steps", "L1 value by 1-norm kernel",
                  "previous prox kernels", "penalty terms by four additions",
                  "penalty values added by their own node")
#: variant -> the variant it is compared with, where that is not "all levers on"
BASE = {"L1 value by 1-norm kernel": "per-tensor penalty steps",
        "previous prox kernels": "per-tensor penalty steps"}


def variant_fit(cls, lever, X, y, epochs, **params):
    attrs, extra, patches = UNDO[lever]
    est_cls = type(cls.__name__, (cls,), attrs) if attrs else cls
    saved = {target: getattr(*target) for target in patches}
    for (module, name), value in patches.items():
        setattr(module, name, value)
    try:
        est = est_cls(**run.fixed_epochs(cls, epochs), batch_size=64, random_state=0,
                      device="cpu", **params, **extra)
        return run._check_epochs(est.fit(X, y), epochs)
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)


def _rows(lines, t, times, levers, reference, workload):
    for lever in levers:
        ratio = t[lever] / reference
        base_lever = BASE.get(lever, "all levers on")
        change = ratio - t[base_lever] / reference
        paired = run.paired_ratio(times, lever, base_lever)
        lines.append(f"| {lever} | {workload} | {ratio:.3f} | {change:+.3f} vs {base_lever} "
                     f"| {paired:.3f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    epochs, repeats = args.epochs, args.repeats
    print(f"- load average at start: {run.load_average()}; {repeats} interleaved repeats, "
          f"{epochs} epochs, medians")
    penalty_levers = PENALTY_LEVERS
    if not fused._compiled():  # compiled once here, so that no variant pays for it
        print("- numba is not installed: the compiled-loops lever is left out")
        penalty_levers = tuple(lever for lever in PENALTY_LEVERS
                               if lever != "compiled loops (numba)")
    lines = ["| lever undone | workload | ratio | change | per-repeat time / base's |",
             "|---|---|---|---|---|"]

    # the estimator against the fastest hand-written loop, no penalties
    Xr, yr = run.regression_data(20000)
    X, y = run.digits_images()
    mlp = {f"module__{k}": v for k, v in run.MLP.items()}
    workloads = [
        ("MLP 20-64-64", SoftRegRegressor, Xr, yr, mlp, run.hand_mlp_fit,
         STEP_LEVERS + MLP_LEVERS),
        ("CNN digits", SoftRegCNNClassifier, X, y, {}, run.hand_cnn_fit, STEP_LEVERS),
    ]
    for name, cls, Xw, yw, params, hand_fit, levers in workloads:
        funcs = {lever: partial(variant_fit, cls, lever, Xw, yw, epochs, **params)
                 for lever in levers}
        funcs["hand"] = partial(hand_fit, Xw, yw, epochs)
        funcs["hand_fused"] = partial(hand_fit, Xw, yw, epochs, fused=True)
        times = {}
        t = run.interleaved(funcs, repeats, record=times)
        hand, label = run.fastest_hand(t)
        _rows(lines, t, times, levers, hand, f"{name} / fastest hand loop ({label})")

    # penalties on / off
    for n_threads in (1, 2):
        with run.threads(n_threads):
            funcs = {lever: partial(variant_fit, SoftRegCNNClassifier, lever, X, y, epochs,
                                    **run.PENALTIES) for lever in penalty_levers}
            funcs["off"] = partial(variant_fit, SoftRegCNNClassifier, "all levers on", X, y, epochs)
            times = {}
            t = run.interleaved(funcs, repeats, record=times)
        _rows(lines, t, times, penalty_levers, t["off"],
              f"CNN digits, penalties on / off, {n_threads} thread(s)")
    print(f"- load average at end: {run.load_average()}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
