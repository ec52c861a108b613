"""Adam for a stack of models held in one ``(n_models, n_params)`` buffer.

:class:`StackedAdam` is ``torch.optim.Adam`` (or ``AdamW``) applied to each
row of the buffer as if it were that model's own optimizer: every model has
its own moments and its own step count, and a step moves only the models
that are *active* in it. A model that skips a step (it has no batch left in
this epoch, it stopped early, or it diverged) keeps its weights, its moments
and its step count exactly, as a model that is not trained at all would.

After a step, :meth:`StackedAdam.l1_thresholds` gives the proximal L1
thresholds of the design document (§2) in Adam's metric, each model with its
own λ1 and its own bias correction, for :func:`~sk_softreg.penalties.prox_l1_`.
"""

import torch

__all__ = ["StackedAdam", "stackable_adam_reason"]

_ADAM_CLASSES = (torch.optim.Adam, torch.optim.AdamW)


def stackable_adam_reason(optimizer):
    """Why ``optimizer`` cannot be reproduced by :class:`StackedAdam`, or None if it can.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        A net's ``optimizer_`` after ``initialize()``.

    Returns
    -------
    str or None
    """
    if type(optimizer) not in _ADAM_CLASSES:
        return f"the optimizer {type(optimizer).__name__} (only Adam and AdamW stack)"
    if len(optimizer.param_groups) != 1:
        return "an optimizer with several parameter groups"
    group = optimizer.param_groups[0]
    for option in ("amsgrad", "maximize", "capturable", "differentiable"):
        if group.get(option):
            return f"the optimizer option {option}=True"
    if torch.is_tensor(group["lr"]):
        return "a tensor learning rate"
    return None


class StackedAdam:
    """Adam / AdamW over the rows of a stacked parameter buffer.

    Parameters
    ----------
    flat : torch.Tensor of shape (n_models, n_params)
        The models' parameters, one row per model; its ``.grad`` is read.
    lr, betas, eps, weight_decay : as in ``torch.optim.Adam``
    decoupled : bool, default=False
        AdamW's decoupled weight decay instead of Adam's coupled one.
    """

    def __init__(self, flat, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
        self.flat = flat
        self.lr = float(lr)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.decoupled = decoupled
        self.exp_avg = torch.zeros_like(flat, memory_format=torch.contiguous_format).detach()
        self.exp_avg_sq = torch.zeros_like(self.exp_avg)
        #: each model's step count, as a float column (n_models, 1)
        self.steps = torch.zeros(len(flat), 1, dtype=flat.dtype, device=flat.device)
        self._denom = None  # the last step's sqrt(v̂) + eps, which l1_thresholds reuses

    def state(self):
        """The per-model state tensors: ``[exp_avg, exp_avg_sq, steps]``."""
        return [self.exp_avg, self.exp_avg_sq, self.steps]

    @classmethod
    def like(cls, optimizer, flat):
        """A stacked copy of the hyperparameters of a model's own Adam or AdamW."""
        group = optimizer.param_groups[0]
        return cls(
            flat,
            lr=group["lr"],
            betas=group["betas"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled=isinstance(optimizer, torch.optim.AdamW)
            or bool(group.get("decoupled_weight_decay")),
        )

    @torch.no_grad()
    def step(self, active):
        """One Adam step of the active models; the others do not change at all.

        Parameters
        ----------
        active : torch.Tensor of shape (n_models,), bool
        """
        flat = self.flat.detach()
        on = active.reshape(-1, 1).to(flat.dtype)
        grad = torch.where(active.reshape(-1, 1), self.flat.grad, 0.0)
        if self.weight_decay and not self.decoupled:
            grad = grad.add(flat, alpha=self.weight_decay) * on
        self.steps.add_(on)
        bias1 = 1.0 - torch.pow(self.beta1, self.steps.clamp_min(1.0))
        self.exp_avg.lerp_(grad, on * (1.0 - self.beta1))
        self.exp_avg_sq.lerp_(grad * grad, on * (1.0 - self.beta2))
        if self.weight_decay and self.decoupled:
            flat.mul_(1.0 - on * (self.lr * self.weight_decay))
        step_size = on * (self.lr / bias1)
        self._denom = self._denominator()
        flat.sub_(torch.div(self.exp_avg, self._denom).mul_(step_size))

    def _denominator(self):
        """Adam's ``sqrt(v̂) + eps`` for every model and coordinate, ``v̂`` bias-corrected."""
        bias2_root = torch.sqrt(1.0 - torch.pow(self.beta2, self.steps.clamp_min(1.0)))
        return self.exp_avg_sq.sqrt().div_(bias2_root).add_(self.eps)

    @torch.no_grad()
    def l1_thresholds(self, lambda1, active, columns):
        """Per-coordinate proximal L1 thresholds ``lr·λ1 / (sqrt(v̂) + eps)`` after a step.

        Parameters
        ----------
        lambda1 : torch.Tensor of shape (n_models,)
        active : torch.Tensor of shape (n_models,), bool
            Models that did not step get a threshold of 0 (no change).
        columns : slice
            The penalized columns of the buffer.

        Returns
        -------
        torch.Tensor of shape (n_models, n_columns)
        """
        denom = self._denom if self._denom is not None else self._denominator()
        scale = self.lr * lambda1.reshape(-1, 1) * active.reshape(-1, 1)
        return scale / denom[:, columns]
