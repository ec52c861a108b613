"""λ2's gradient through the optimizer's own ``weight_decay``.

The gradient of ``λ2·Σw²`` is ``2·λ2·w``. Added to the gradients after
``backward`` (:func:`~sk_softreg.penalties.add_l2_grad_`) it is one more pass
over the weights and their gradients, which by then have left the cache. SGD
and Adam add ``weight_decay·w`` to each gradient inside their step, before
anything else (coupled weight decay; not AdamW, whose decay is decoupled), and
fused Adam does it inside its one kernel, on data it reads anyway. So for a
parameter group that holds only penalized weights, raising the group's
``weight_decay`` by ``2·λ2`` for the step gives the optimizer the same
gradient at no extra pass.

- :func:`split_groups` gives the penalized weights parameter groups of their
  own (same hyperparameters), when the optimizer is built;
- :func:`decay_groups` finds, at a step, the groups that hold exactly the
  penalized weights, or None where the shortcut does not apply;
- :func:`step_with_added_decay` runs ``optimizer.step()`` with their
  ``weight_decay`` raised, and puts it back.
"""

import torch

__all__ = ["DECAY_OPTIMIZERS", "decay_groups", "split_groups", "step_with_added_decay"]

#: optimizers whose ``weight_decay`` adds ``weight_decay·w`` to the gradient first
#: (exactly these classes: a subclass may change ``step``)
DECAY_OPTIMIZERS = (torch.optim.Adam, torch.optim.SGD)


def split_groups(groups, penalized):
    """Split each parameter group into its penalized and its other parameters.

    Parameters
    ----------
    groups : list of dict
        Parameter groups as skorch builds them (``{"params": [...], **options}``).
    penalized : list of torch.Tensor
        The penalized parameters.

    Returns
    -------
    list of dict
        Each group as one or two groups with its options: first its penalized
        parameters, then the others, each in their order; no group is empty.
    """
    ids = {id(p) for p in penalized}
    split = []
    for group in groups:
        params = list(group["params"])
        for part in ([p for p in params if id(p) in ids], [p for p in params if id(p) not in ids]):
            if part:
                split.append({**group, "params": part})
    return split


def decay_groups(optimizer, penalized):
    """The parameter groups of ``optimizer`` that hold exactly ``penalized``, or None.

    None unless ``type(optimizer)`` is one of :data:`DECAY_OPTIMIZERS`, every
    penalized parameter is in a group that holds penalized parameters only,
    and no such group maximizes or decouples its weight decay.
    """
    if type(optimizer) not in DECAY_OPTIMIZERS or not penalized:
        return None
    ids = {id(p) for p in penalized}
    groups = [g for g in optimizer.param_groups if any(id(p) in ids for p in g["params"])]
    members = [id(p) for g in groups for p in g["params"]]
    if len(members) != len(ids) or not ids.issuperset(members):
        return None
    if any(g.get("maximize") or g.get("decoupled_weight_decay") for g in groups):
        return None
    return groups


def step_with_added_decay(optimizer, groups, decay):
    """``optimizer.step()`` with ``weight_decay`` raised by ``decay`` in ``groups``.

    Each group's ``weight_decay`` is restored after the step, also when it
    raises, so the optimizer's hyperparameters read the same as before.
    """
    saved = [g["weight_decay"] for g in groups]
    try:
        for g, weight_decay in zip(groups, saved):
            g["weight_decay"] = weight_decay + decay
        optimizer.step()
    finally:
        for g, weight_decay in zip(groups, saved):
            g["weight_decay"] = weight_decay
