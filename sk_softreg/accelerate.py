"""Estimators trained through Hugging Face Accelerate (multi-GPU, mixed precision).

The classes here are the sk_softreg estimators with skorch's
:class:`skorch.hf.AccelerateMixin` in front. Pass an
``accelerate.Accelerator`` as ``accelerator``; leave ``device=None`` so that
Accelerate places the model and the batches.

What changes compared with the plain estimators:

- gradients are zeroed after each real optimizer step instead of before each
  micro-batch: skorch's zeroing at the start of a step, combined with
  Accelerate's ``AcceleratedOptimizer.zero_grad`` (which acts on the syncing
  micro-batch), would otherwise discard all but the last micro-batch of each
  accumulation window;

- the proximal L1 step runs only after a *real* optimizer step: under
  gradient accumulation (``Accelerator(gradient_accumulation_steps=k)``)
  Accelerate's optimizer skips ``step()`` until the gradients are synced, and
  under fp16 loss scaling it skips steps that overflowed; soft-thresholding
  then would shrink the weights without a gradient step;
- the Adam-preconditioned threshold reads the state of the optimizer that
  Accelerate wraps (``AcceleratedOptimizer`` exposes its ``param_groups`` and
  ``state``);
- the penalties select parameters on the unwrapped module, so a callable
  ``penalize`` sees the same names with and without DistributedDataParallel.

Penalties are computed inside ``accelerator.autocast()`` on the fp32 master
weights, and the history terms are accumulated per micro-batch as in the plain
estimators. Sharded training (FSDP, DeepSpeed ZeRO-3) is not supported: the
proximal step needs the full weights on every process.

This module needs the ``accelerate`` extra (``pip install 'sk-softreg[accelerate]'``).
"""


try:
    import accelerate  # noqa: F401  (fail early with a clear message)
    from skorch.hf import AccelerateMixin
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sk_softreg.accelerate needs the accelerate package; install the extra with "
        "pip install 'sk-softreg[accelerate]'."
    ) from exc


from ._classifier import SoftRegCNNClassifier
from ._regressor import SoftRegRegressor
from .penalties import select_penalized

__all__ = ["AcceleratedSoftRegCNNClassifier", "AcceleratedSoftRegRegressor"]


class _SoftRegAccelerateMixin(AccelerateMixin):
    """AccelerateMixin with the proximal step gated on real optimizer steps."""

    # Accelerate must see real DataLoaders (it shards them across processes and
    # flushes a partial gradient accumulation at the end of each one), and it
    # wraps the module and the optimizer, so the weights keep their own storage
    _fast_layer = False
    # AccelerateMixin's train_step_single scales the loss (mixed precision) and
    # accumulates gradients: the penalties' gradients must come through the loss
    _penalties_in_loss = True
    # with fused Adam, torch's GradScaler steps the optimizer on an overflowed step and
    # lets the kernel skip it, so Accelerate's step_was_skipped stays False and the
    # proximal step would run on a skipped step: keep torch's default Adam here
    _fused_adam_default = False

    def _optimizer_stepped(self):
        if not self.accelerator.sync_gradients:
            return False  # accumulating: AcceleratedOptimizer.step() was a no-op
        return not any(
            getattr(getattr(self, name + "_"), "step_was_skipped", False)
            for name in self._optimizers
        )

    def _zero_grad_optimizer(self, set_to_none=None):
        # skorch zeroes the gradients at the start of every step. Under
        # gradient accumulation AcceleratedOptimizer.zero_grad acts on the
        # micro-batch that syncs, so it would wipe the gradients accumulated
        # over the previous micro-batches; zero them after the real step.
        pass

    def _step_optimizer(self, step_fn):
        super()._step_optimizer(step_fn)
        # a no-op unless the gradients were synced (a real step was taken)
        super()._zero_grad_optimizer()

    def _proximal_step(self):
        if self._optimizer_stepped():
            super()._proximal_step()

    def get_params_for(self, prefix):
        """skorch's, with the ``"auto"`` print_log sink resolved in the returned copy.

        ``"auto"`` is ``accelerator.print`` (the main process prints) when
        ``verbose``; with ``verbose=0`` it is the builtin ``print``, which
        skorch's PrintLog silences (it ignores ``verbose`` for any other sink).
        The parameter itself stays ``"auto"``.
        """
        params = super().get_params_for(prefix)
        if prefix == "callbacks__print_log" and isinstance(params.get("sink"), str):
            params["sink"] = self.accelerator.print if self.verbose else print
        return params

    def _initialize_callbacks(self):
        # AccelerateMixin's version overwrites the callbacks__print_log__sink
        # parameter during fit; get_params_for resolves "auto" instead.
        return super(AccelerateMixin, self)._initialize_callbacks()

    def _penalized_params(self):
        module = self.accelerator.unwrap_model(self.module_, keep_fp32_wrapper=True)
        return select_penalized(module, self.penalize)


_DOC_EXTRA = """
    This variant trains through Hugging Face Accelerate (see
    :mod:`sk_softreg.accelerate`). It takes every parameter of {base} plus:

    accelerator : accelerate.Accelerator
        Decides the devices, the mixed precision and the gradient accumulation.
    device : None, default=None
        Leave ``None``: Accelerate places the model and the data.
    unwrap_after_train : bool, default=True
        Unwrap the module after ``fit`` so the estimator can be pickled.

    Examples
    --------
    >>> from accelerate import Accelerator
    >>> from sklearn.datasets import load_digits
    >>> from sk_softreg.accelerate import AcceleratedSoftRegCNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = AcceleratedSoftRegCNNClassifier(
    ...     accelerator=Accelerator(cpu=True), lambda1=1e-4, max_epochs=1, random_state=0)
    >>> clf.fit(X[:128] / 16, y[:128]).predict(X[:3]).shape
    (3,)
"""


class AcceleratedSoftRegCNNClassifier(_SoftRegAccelerateMixin, SoftRegCNNClassifier):
    __doc__ = "SoftRegCNNClassifier trained through Hugging Face Accelerate.\n" + _DOC_EXTRA.format(
        base=":class:`~sk_softreg.SoftRegCNNClassifier`"
    )


_REGRESSOR_EXAMPLE = """
    >>> from accelerate import Accelerator
    >>> from sklearn.datasets import load_diabetes
    >>> from sk_softreg.accelerate import AcceleratedSoftRegRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = AcceleratedSoftRegRegressor(
    ...     accelerator=Accelerator(cpu=True), alpha=0.1, max_epochs=1, random_state=0)
    >>> reg.fit(X, y).predict(X[:3]).shape
    (3,)
"""


class AcceleratedSoftRegRegressor(_SoftRegAccelerateMixin, SoftRegRegressor):
    __doc__ = (
        "SoftRegRegressor trained through Hugging Face Accelerate.\n"
        + _DOC_EXTRA.format(base=":class:`~sk_softreg.SoftRegRegressor`").split("    >>>", 1)[0]
        + _REGRESSOR_EXAMPLE.lstrip("\n")
    )
