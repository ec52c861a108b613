"""Training many fits of one architecture as one stacked model.

A grid search over penalties trains the same small network many times.
Here each of those fits (a *member*) is first set up by its own estimator,
exactly as its ``fit`` would (:func:`~sk_softreg._stacked_members.prepare_member`: data checks, sample
weights, seeding, ``initialize()``, the early-stopping split and the tensor
batches), so that its initialization, rows and fitted attributes are the
independent fit's. :func:`train_stack` then trains the members together:

- the weights of all members are rows of one ``(n_members, n_params)``
  buffer, and the network runs once per step for all of them
  (``torch.func.functional_call`` under ``torch.func.vmap``, or for the
  regressor's default module directly on the stacked weights:
  :mod:`~sk_softreg._stacked_layers`);
- every member draws its own batches from its own random stream, as its
  own ``TensorBatches`` would, so its shuffles are the independent fit's;
- each member's loss is its estimator's own per-sample data loss and KL term,
  averaged over its own batch (with its sample weights), plus its own λ1, λ2
  and α; the λ terms go through the stacked
  :class:`~sk_softreg._engine.PenaltyEngine` and the proximal L1 step, and
  ``lambda_features`` through each member's group soft-threshold;
- one :class:`~sk_softreg._stacked_optim.StackedAdam` steps the members
  that have a batch in this step; a member whose epoch has ended, that
  stopped early or diverged does not move;
- each epoch, each member's history row, validation loss and early
  stopping (its own skorch ``EarlyStopping`` callback) are the fit's own.

At the end the weights go back into each member's ``module_`` and the
estimator's own ``_after_fit`` sets ``sparsity_``, ``n_iter_``,
``best_epoch_``, ``residual_std_`` and the rest. With dropout 0 and a
``random_state`` the members' predictions match independent fits to float
rounding; with dropout each member draws its own masks, not the fit's.
"""

import math
import time
from contextlib import nullcontext

import numpy as np
import torch

from ._callbacks import fail_non_finite
from ._engine import PenaltyEngine
from ._exceptions import NonFiniteLossError
from ._multilabel import subset_correct
from ._predictive_std import dropout_off, shares_dropout_free_pass
from ._stacked_layers import direct_forward
from ._stacked_members import penalized_names
from ._stacked_optim import StackedAdam
from ._stacked_rows import Rows
from .penalties import prox_group_l2_

__all__ = ["train_path", "train_stack"]


class _Stack:
    """The members' weights as rows of one buffer, and their data as pools of rows."""

    def __init__(self, members, moments=None, pools=None):
        self.members = members
        # a member whose KL needs the dropout-free pass, if any (the regressor's at alpha > 0
        # with dropout): the stack runs that pass for all, the others weigh their KL by 0
        template = next((m.net for m in members if m.net._kl_dropout_layers()), members[0].net)
        self.module = template.module_
        self.direct = direct_forward(self.module)  # None: vmap
        self.device = next(self.module.parameters()).device
        penalized = penalized_names(template)
        names = [n for n, _ in self.module.named_parameters()]
        names = penalized + [n for n in names if n not in penalized]
        self.layout, start = [], 0
        for name in names:
            shape = tuple(self.module.get_parameter(name).shape)
            size = math.prod(shape)
            self.layout.append((name, shape, start, start + size))
            start += size
        self.penalized = slice(0, sum(end - s for n, _, s, end in self.layout if n in penalized))
        with torch.no_grad():
            rows = [
                torch.cat([m.net.module_.get_parameter(n).detach().reshape(-1) for n in names])
                for m in members
            ]
        self.flat = torch.stack(rows).requires_grad_(True)
        self.buffers = {
            name: torch.stack([m.net.module_.get_buffer(name) for m in members])
            for name, _ in self.module.named_buffers()
        }
        if pools is not None:  # a subset's: the pools of the whole stack
            self.train, self.valid = pools
        else:
            self.train = Rows([m.train for m in members])
            self.valid = Rows([m.valid for m in members]) if members[0].valid is not None else None
        nets = [m.net for m in members]
        self.lambda1, self.lambda2, self.alpha = (
            torch.tensor([getattr(n, name) for n in nets], dtype=torch.float32, device=self.device)
            for name in ("lambda1", "lambda2", "alpha")
        )
        # the estimator's KL sees these dropout layers switched off (the regressor's does)
        groups = {}
        for i, net in enumerate(nets):
            groups.setdefault(_loss_key(net), []).append(i)
        self.loss_groups = list(groups.values())  # members whose losses one call computes
        self.kl_dropout = template._kl_dropout_layers() or None
        self.kl_pair = self.kl_dropout is not None and shares_dropout_free_pass(self.module)
        self.optimizer = StackedAdam.like(template.optimizer_, self.flat)
        if moments is not None:
            for state, value in zip(self.optimizer.state(), moments):
                state.copy_(value)
        penalized = self.flat.detach()[:, self.penalized]
        self.engine = PenaltyEngine(
            [penalized], self.lambda1, self.lambda2, template.l1_method, stacked=True
        )
        self.with_penalties = bool(self.lambda1.any() or self.lambda2.any()) and penalized.shape[1]
        self.proximal = (
            template.l1_method == "proximal" and self.with_penalties and bool(self.lambda1.any())
        )
        self.lambda_features = [float(n.lambda_features) for n in nets]
        self.features = None  # the input layer's weight: (columns of the buffer, its shape)
        if any(self.lambda_features):
            weight = template._feature_weight()
            name = next(n for n, p in self.module.named_parameters() if p is weight)
            _, shape, start, end = next(entry for entry in self.layout if entry[0] == name)
            self.features = (slice(start, end), shape)

    def feature_values(self):
        """Each member's ``λf·Σ_j ‖W1[:, j]‖`` (0 without ``lambda_features``), ``(n_members,)``."""
        if self.features is None:
            return torch.zeros(len(self.members), device=self.device)
        columns, shape = self.features
        with torch.no_grad():
            weight = self.flat[:, columns].view(len(self.members), *shape)
            norms = torch.linalg.vector_norm(weight, dim=1).sum(dim=1)
        return torch.tensor(self.lambda_features, device=self.device) * norms

    @torch.no_grad()
    def prox_features_(self, active):
        """Each active member's group soft-threshold of its input layer's columns, in its
        own Adam metric, after the L1 step (as :meth:`~sk_softreg._features.
        FeatureSelectionMixin._prox_features` does in a fit)."""
        columns, shape = self.features
        ones = torch.ones(len(self.members), device=self.device)
        steps = self.optimizer.l1_thresholds(ones, active, columns)
        weights = self.flat.detach()[:, columns]
        for m, (on, lam) in enumerate(zip(active.tolist(), self.lambda_features)):
            if on and lam:
                prox_group_l2_(weights[m].view(shape), steps[m].view(shape), lam)

    def subset(self, keep):
        """The stack of members ``keep`` only, with their weights and Adam moments.

        Every member's module gets its current weights first (the members
        left out keep them).
        """
        for i, member in enumerate(self.members):
            self.load_into(i, member)
        index = torch.as_tensor(keep, device=self.device)
        moments = [state.index_select(0, index) for state in self.optimizer.state()]
        pools = (self.train.subset(keep), self.valid.subset(keep) if self.valid is not None else None)
        return _Stack([self.members[i] for i in keep], moments, pools)

    def params(self):
        """The members' parameters as views of the buffer, ``(n_members, *shape)`` each."""
        m = len(self.members)
        return {
            name: self.flat[:, start:end].view(m, *shape)
            for name, shape, start, end in self.layout
        }

    def forward(self, X, **kwargs):
        """The module's output for each member's batch: X is ``(n_members, batch, ...)``;
        ``kwargs`` go to the module's ``forward``."""
        if self.direct is not None:
            return self.direct(self.params(), X, **kwargs)

        def call(params, buffers, x):
            return torch.func.functional_call(self.module, {**params, **buffers}, (x,), kwargs)

        return torch.func.vmap(call, randomness="different")(self.params(), self.buffers, X)

    @torch.no_grad()
    def load_into(self, index, member):
        """Copy the weights of row ``index`` into ``member``'s own module."""
        params = self.params()
        for name, p in member.net.module_.named_parameters():
            p.copy_(params[name][index])


def _member_losses(stack, y_pred, y, w, training, kl_pred=None):
    """Each member's data loss and mean KL on its batch: two ``(n_members,)`` tensors.

    ``kl_pred``, if given, is the output the KL term is computed on (the
    regressor's, without dropout); else ``y_pred``.

    Members are grouped by what their loss reads besides the rows
    (:func:`_loss_key`), and each group's rows go through one member's own
    ``_per_sample_data_loss`` and ``_kl_term``; the means are weighted by ``w``
    (mask × sample weight).
    """
    m, b = w.shape
    data = kl = None
    for rows in stack.loss_groups:
        net = stack.members[rows[0]].net
        whole = len(rows) == m
        index = torch.as_tensor(rows, device=w.device)
        target = _rows_of(y.view(m, b, *y.shape[1:]), index, whole, len(rows) * b)
        pred = _rows_of(y_pred, index, whole, len(rows) * b)
        group_data = _per_row(net._per_sample_data_loss(pred, target, None, training), len(rows), b)
        group_kl = None
        if training and any(stack.members[i].net.alpha for i in rows):
            if kl_pred is not None:
                pred = _rows_of(kl_pred, index, whole, len(rows) * b)
            group_kl = _per_row(net._kl_term(pred, target), len(rows), b)
        if whole:
            data, kl = group_data, group_kl
            break
        if data is None:
            data, kl = torch.zeros(m, b, device=w.device), torch.zeros(m, b, device=w.device)
        data = data.index_put((index,), group_data)
        if group_kl is not None:
            kl = kl.index_put((index,), group_kl)
    total = w.sum(1).clamp_min(torch.finfo(w.dtype).tiny)
    valid = w > 0
    data = torch.where(valid, data, 0.0).mul(w).sum(1) / total
    if kl is None:
        return data, torch.zeros_like(data)
    return data, torch.where(valid, kl, 0.0).mul(w).sum(1) / total


def _loss_key(net):
    """What a member's per-sample loss reads besides its rows: ``tau``, and the
    criterion's ``pos_weight`` (multilabel ``class_weight="balanced"``, per fold)."""
    pos_weight = getattr(net.criterion_, "pos_weight", None)
    if pos_weight is not None:
        pos_weight = tuple(pos_weight.flatten().tolist())
    return getattr(net, "tau", None), pos_weight


def _rows_of(values, index, whole, n):
    """The members ``index`` of ``(n_members, batch, ...)`` values, as ``(n, ...)`` rows."""
    if not whole:
        values = values.index_select(0, index)
    return values.reshape(n, *values.shape[2:])


def _per_row(values, m, b):
    """Per-sample values ``(m*b, ...)`` averaged over trailing axes, as ``(m, b)``."""
    return values.reshape(m * b, -1).mean(dim=1).view(m, b)


def train_stack(members, progress=None, mixed_precision=None):
    """Train ``members`` (one :func:`stack_key`) together; each ends fitted or with ``error``.

    Parameters
    ----------
    members : list of Member
    progress : callable or None
        Called after each epoch with ``(epoch, n_running)``.
    mixed_precision : {None, "bf16"}
        ``"bf16"``: the training steps' forward passes run under
        ``torch.autocast`` with bfloat16, and their outputs are cast back to
        float32 for the losses.
    """
    for member in members:
        member.running = True
        stopper = dict(member.net.callbacks_).get("early_stopping")
        if stopper is not None:
            stopper.on_train_begin(member.net)  # not switched: as skorch's on_train_begin
            if member.valid is not None and member.net._early_stopping_active():
                member.stopper = stopper
        scorer = dict(member.net.callbacks_).get("valid_score")
        if scorer is not None:
            scorer.on_train_begin(member.net)
        member.net.history.clear()
    stack = _Stack(members)
    max_epochs = members[0].net.max_epochs
    cuda = [stack.device.index or 0] if stack.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        seeds = [m.net.random_state for m in members]
        seeds = [s for s in seeds if isinstance(s, (int, np.integer))]
        if seeds:
            torch.manual_seed(int(seeds[0]))  # the stack's own stream (dropout)
        for epoch in range(1, max_epochs + 1):
            running = [m.running for m in stack.members]
            if not any(running):
                break
            if not all(running):  # stopped members no longer cost a step
                stack = stack.subset([i for i, on in enumerate(running) if on])
                running = [True] * len(stack.members)
            start = time.perf_counter()
            orders = _draw_orders(stack.members, running)
            records = _train_epoch(stack, orders, running, mixed_precision)
            valid = _validate(stack, running) if stack.valid is not None else None
            duration = time.perf_counter() - start
            for i, member in enumerate(stack.members):
                if running[i]:
                    _end_epoch(stack, i, member, epoch, records, valid, duration)
            if progress is not None:
                progress(epoch, sum(m.running for m in members))
    for i, member in enumerate(stack.members):
        stack.load_into(i, member)
    for member in members:
        if member.error is None:
            _finish(member)


def train_path(members, lambdas, dense_epochs, path_epochs, after_step):
    """Train ``members`` together along a warm-started ``lambda_features`` path.

    ``dense_epochs`` epochs with ``lambda_features=0``, then ``path_epochs``
    epochs at each λ of ``lambdas`` in turn, each from the previous λ's
    weights and Adam moments. After each λ, every member's module gets its
    weights, its ``_after_fit`` runs, and ``after_step(k, i, net)`` is called
    (λ index ``k``, member ``i``). The members are prepared with a non-zero
    ``lambda_features`` (so that the stack finds the input layer), no
    validation set, and ``max_epochs`` of at least the path's epochs.

    Parameters
    ----------
    members : list of Member
    lambdas : sequence of float
    dense_epochs, path_epochs : int
    after_step : callable
    """
    for member in members:
        member.running = True
        member.net.history.clear()
    stack = _Stack(members)
    cuda = [stack.device.index or 0] if stack.device.type == "cuda" else []
    epoch = 0

    def run(n_epochs):
        nonlocal epoch
        for _ in range(n_epochs):
            epoch += 1
            running = [m.running for m in stack.members]
            if not any(running):
                return
            start = time.perf_counter()
            orders = _draw_orders(stack.members, running)
            records = _train_epoch(stack, orders, running)
            duration = time.perf_counter() - start
            for i, member in enumerate(stack.members):
                if running[i]:
                    _end_epoch(stack, i, member, epoch, records, None, duration)

    with torch.random.fork_rng(devices=cuda):
        seeds = [m.net.random_state for m in members]
        seeds = [s for s in seeds if isinstance(s, (int, np.integer))]
        if seeds:
            torch.manual_seed(int(seeds[0]))  # the stack's own stream (dropout)
        stack.lambda_features = [0.0] * len(members)
        run(dense_epochs)
        for k, lam in enumerate(lambdas):
            stack.lambda_features = [float(lam)] * len(members)
            for member in members:
                member.net.lambda_features = float(lam)
            run(path_epochs)
            for i, member in enumerate(members):
                stack.load_into(i, member)
                if member.error is None:
                    _finish(member)
                after_step(k, i, member)


def _draw_orders(members, running):
    """Each running member's row order for this epoch, from its own random stream."""
    orders = []
    for member, on in zip(members, running):
        if not on:
            orders.append(None)
            continue
        outer = torch.get_rng_state()
        torch.set_rng_state(member.rng)
        orders.append(member.train.epoch_order())
        if member.valid is not None:
            member.valid.epoch_order()  # the validation iterator's draw
        member.rng = torch.get_rng_state()
        torch.set_rng_state(outer)
    return orders


def _train_epoch(stack, orders, running, mixed_precision=None):
    """One epoch of stacked steps; returns the host copies of the per-step records."""
    x_index, y_index, mask, sizes = stack.train.index(orders, running)
    active = mask.any(dim=2)
    stack.module.train()
    records = []
    for s in range(len(sizes)):
        X, y, w = stack.train.gather(x_index[s], y_index[s], mask[s])
        y_pred, kl_pred = _training_outputs(stack, X, mixed_precision)
        data, kl = _member_losses(stack, y_pred, y, w, training=True, kl_pred=kl_pred)
        alpha = stack.alpha
        objective = data + torch.where(alpha > 0, alpha * kl, 0.0)
        l1 = l2 = torch.zeros_like(objective)
        features = stack.feature_values()
        if stack.with_penalties:
            sum_abs, sum_squares = stack.engine.values()
            l1, l2 = stack.lambda1 * sum_abs, stack.lambda2 * sum_squares
        stack.flat.grad = None
        objective.sum().backward()
        if stack.with_penalties:
            stack.engine.params[0].grad = stack.flat.grad[:, stack.penalized]
            stack.engine.add_grads_()
        stack.optimizer.step(active[s])
        if stack.proximal:
            thresholds = stack.optimizer.l1_thresholds(stack.lambda1, active[s], stack.penalized)
            _prox(stack.engine.params[0], thresholds)
        if stack.features is not None:
            stack.prox_features_(active[s])
        total = (objective + l1 + l2 + features).detach()
        records.append(torch.stack([total, l1, l2, alpha * kl.detach(), features]))
    return torch.stack(records).cpu().numpy(), sizes


def _training_outputs(stack, X, mixed_precision=None):
    """The stack's training output on ``X``, and the output its KL sees (or None),
    in float32; with ``mixed_precision="bf16"`` computed under bfloat16 autocast."""
    if mixed_precision is None:
        context = nullcontext()
    else:
        context = torch.autocast(stack.device.type, dtype=torch.bfloat16)
    kl_pred = None
    with context:
        if stack.kl_pair:  # the regressor's KL sees the dropout-free output
            y_pred, kl_pred = stack.forward(X, dropout_free=True)
        else:
            y_pred = stack.forward(X)
            if stack.kl_dropout is not None:
                with dropout_off(stack.kl_dropout):
                    kl_pred = stack.forward(X)
    if mixed_precision is None:
        return y_pred, kl_pred
    return y_pred.float(), None if kl_pred is None else kl_pred.float()


@torch.no_grad()
def _prox(weights, thresholds):
    weights.sub_(torch.clamp(weights, min=-thresholds, max=thresholds))


@torch.no_grad()
def _validate(stack, running):
    """Each member's validation batch losses and accuracy (classifiers) on host."""
    x_index, y_index, mask, sizes = stack.valid.index([None] * len(running), running)
    stack.module.eval()
    losses, correct = [], np.zeros(len(running))
    classifier = hasattr(stack.members[0].net, "classes_")
    for s in range(len(sizes)):
        X, y, w = stack.valid.gather(x_index[s], y_index[s], mask[s])
        y_pred = stack.forward(X)
        data, _ = _member_losses(stack, y_pred, y, w, training=False)
        losses.append(data)
        if classifier:
            hits = _hits(y_pred, y.view(*mask[s].shape, *y.shape[1:])) & mask[s]
            correct += hits.sum(1).cpu().numpy()
    return torch.stack(losses).cpu().numpy(), sizes, correct, classifier


def _hits(logits, target):
    """Which rows ``valid_acc`` counts right, ``(n_members, batch)``: the top class equals
    the target, or for ``(n_members, batch, L)`` indicator targets every label
    (:func:`~sk_softreg._multilabel.subset_correct`, as the classifier's own ``valid_acc``)."""
    if target.dim() == 3:
        return subset_correct(torch.sigmoid(logits), target)
    return logits.argmax(-1) == target


def _end_epoch(stack, i, member, epoch, records, valid, duration):
    """Write member ``i``'s history row, check its losses, and run its early stopping."""
    net = member.net
    (values, sizes) = records
    rows = sizes[:, i]
    n = rows > 0
    history = net.history
    history.new_epoch()
    history.record("epoch", len(history))
    batch_losses = values[n, 0, i]
    batches = list.__getitem__(history, -1)["batches"]  # the row skorch's batches go to
    batches += [
        {"train_loss": float(loss), "train_batch_size": int(size)}
        for loss, size in zip(batch_losses, rows[n])
    ]
    valid_losses = valid_rows = None
    if valid is not None:
        losses, vsizes, correct, classifier = valid
        valid_rows = vsizes[:, i]
        valid_losses = losses[valid_rows > 0, i]
        batches += [
            {"valid_loss": float(loss), "valid_batch_size": int(size)}
            for loss, size in zip(valid_losses, valid_rows[valid_rows > 0])
        ]
    history.record("train_batch_count", int(n.sum()))
    if valid is not None:
        history.record("valid_batch_count", int((valid_rows > 0).sum()))
    total = rows[n].sum()
    for key, column in (("train_l1", 1), ("train_l2", 2), ("train_kl", 3), ("train_features", 4)):
        history.record(key, float(np.dot(values[n, column, i], rows[n]) / total))
    history.record("dur", duration)
    _record_best(history, "train_loss", float(np.average(batch_losses, weights=rows[n])), True)
    if valid is not None:
        _record_best(history, "valid_loss",
                     float(np.average(valid_losses, weights=valid_rows[valid_rows > 0])), True)
        if classifier:
            _record_best(history, "valid_acc", float(correct[i] / valid_rows.sum()), False)
    if not _finite_epoch(member, epoch, batch_losses, valid_losses):
        return
    stopper = member.stopper
    scorer = dict(net.callbacks_).get("valid_score") if stopper is not None else None
    if scorer is not None:  # the estimator's scoring, on the member's own weights
        stack.load_into(i, member)
        scorer.on_epoch_end(net, dataset_valid=member.dataset_valid)
    if stopper is not None:
        if stopper._is_score_improved(history[-1, stopper.monitor]):
            stack.load_into(i, member)  # the weights the callback keeps as the best
        try:
            stopper.on_epoch_end(net)
        except KeyboardInterrupt:  # how skorch's EarlyStopping ends a fit
            member.running = False
    if epoch >= net.max_epochs:
        member.running = False


def _record_best(history, key, value, lower_is_better):
    """Record ``key`` and ``key_best`` as skorch's scoring callbacks do."""
    previous = [row[key] for row in history[:-1] if key in row]
    if lower_is_better:
        best = all(value < p for p in previous)
    else:
        best = all(value > p for p in previous)
    history.record(key, value)
    history.record(key + "_best", bool(best))


def _finite_epoch(member, epoch, batch_losses, valid_losses):
    """Stop ``member`` with a :class:`~sk_softreg.NonFiniteLossError` where a loss is not
    finite, worded as the non-finite guard of its own fit; True if all are finite."""
    for key, losses in (("training", batch_losses), ("validation", valid_losses)):
        bad = np.flatnonzero(~np.isfinite(losses)) if losses is not None else []
        if len(bad):
            member.running = False
            where = f"at epoch {epoch}, batch {bad[0] + 1}"
            verb = "diverged" if key == "training" else "stopped"
            try:
                fail_non_finite(member.net, f"{verb}: the {key} loss became {losses[bad[0]]} {where}")
            except NonFiniteLossError as error:
                member.error = error
            return False
    return True


def _finish(member):
    """The member's best epoch restored (early stopping), then its own ``_after_fit``."""
    net = member.net
    if member.stopper is not None:
        member.stopper.on_train_end(net)
    scorer = dict(net.callbacks_).get("valid_score")
    if scorer is not None:
        scorer.on_train_end(net)
    try:
        net._after_fit(member.X, member.y, member.sample_weight, held_out=member.dataset_valid)
    except Exception as error:  # non-finite weights: the member gets error_score
        member.error = error
