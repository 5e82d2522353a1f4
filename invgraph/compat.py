"""FrEIA compatibility, in one place: old names that still work, and FrEIA checkpoints.

invgraph keeps FrEIA's vocabulary so that FrEIA code migrates by renaming the import. What
that takes beyond keeping names is gathered here:

* old names: :func:`deprecated_alias` makes FrEIA's ``ReversibleGraphNet`` and
  ``ReversibleSequential`` (warning when used), :func:`renamed_argument` reads FrEIA's
  ``Reshape(target_dim=...)``; ``ActNorm.init_on_next_batch`` and ``GraphINN.plot`` keep
  FrEIA's names on their classes, and :mod:`invgraph.utils` keeps the path of
  ``FrEIA.utils`` (``plot_graph``);
* FrEIA 0.2 state dicts: the fixed tensors FrEIA saves and invgraph derives
  (:func:`drop_fixed_tensor`, :func:`drop_householder_matrix`) are checked and dropped on
  load, and the ActNorm flag FrEIA does not save is inferred
  (:func:`infer_actnorm_initialised`); ``GraphINN.module_list`` keeps FrEIA's order (see
  :func:`invgraph.framework.analysis.freia_module_order`), so keys ``module_list.<k>.``
  match.

This module imports no other part of invgraph but its error type, so every layer may use it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TypeVar

import torch
from torch import Tensor

from .errors import InvGraphError

__all__ = [
    "deprecated_alias",
    "drop_fixed_tensor",
    "drop_householder_matrix",
    "infer_actnorm_initialised",
    "renamed_argument",
]

T = TypeVar("T", bound=type)


def deprecated_alias(
    cls: T,
    name: str,
    module: str,
    positional: tuple[str, ...] = (),
    refused: Mapping[str, str] | None = None,
) -> T:
    """A subclass of ``cls`` called ``name`` that warns, when built, to use ``cls`` instead.

    Arguments:
        cls: The class to alias.
        name: The old name.
        module: The module the alias is assigned in (so that pickle finds it).
        positional: The old signature's parameter names, in order, if positional arguments
            must be read by the old signature (they are passed on as keywords).
        refused: Old parameters that are no longer supported, with the reason: given as
            anything but ``None``, they raise :class:`~invgraph.errors.InvGraphError`.

    Example:
        >>> import warnings
        >>> class New:
        ...     def __init__(self, size=1):
        ...         self.size = size
        >>> Old = deprecated_alias(New, "Old", __name__, positional=("size", "legacy"),
        ...                        refused={"legacy": "it did nothing"})
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     old = Old(3)
        >>> old.size, isinstance(old, New), caught[0].category.__name__
        (3, True, 'DeprecationWarning')
    """
    refusals = dict(refused or {})

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        warnings.warn(f"{name} is deprecated; use {cls.__name__}", DeprecationWarning, stacklevel=2)
        if positional:
            if len(args) > len(positional):
                raise InvGraphError(
                    f"{name}: takes at most {len(positional)} positional arguments "
                    f"({', '.join(positional)}), got {len(args)}"
                )
            kwargs = {**dict(zip(positional, args)), **kwargs}
            args = ()
        for key, reason in refusals.items():
            if kwargs.pop(key, None) is not None:
                raise InvGraphError(f"{name}: {key} is not supported; {reason}")
        # cls's own __init__ on purpose (mypy calls __init__ through a class object unsound)
        cls.__init__(self, *args, **kwargs)  # type: ignore[misc]

    init: Callable[..., None] = __init__
    return type(  # type: ignore[return-value]
        name,
        (cls,),
        {
            "__init__": init,
            "__module__": module,
            "__qualname__": name,
            "__doc__": f"Deprecated alias of :class:`{cls.__name__}`, kept for FrEIA code.",
        },
    )


def renamed_argument(owner: str, old: str, old_value: Any, new: str, new_value: Any) -> Any:
    """The value of an argument given under its ``new`` name or its ``old`` one (FrEIA's).

    The old name still works, with a :class:`FutureWarning`; both at once must agree.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     renamed_argument("Reshape", "target_dim", (4, 2), "output_dims", None)
        (4, 2)
    """
    if old_value is None:
        return new_value
    if new_value is not None and tuple(new_value) != tuple(old_value):
        raise InvGraphError(
            f"{owner}: received {new}={tuple(new_value)} and {old}={tuple(old_value)} (its old "
            f"name); pass {new} only"
        )
    warnings.warn(
        f"{owner}: {old!r} is the old name of {new!r}; use {new!r}", FutureWarning, stacklevel=3
    )
    return old_value


def drop_fixed_tensor(
    state_dict: MutableMapping[str, Tensor], key: str, expected: Tensor, owner: str, why: str = ""
) -> None:
    """Drop a fixed tensor FrEIA saves and invgraph derives, if it is ``expected`` exactly.

    FrEIA 0.2 stores the 2x2 filters of its Haar (``haar_weights``) and i-RevNet
    (``downsample_kernel``) squeezes; invgraph computes them. Anything other than those
    filters would be a different transform, so it is refused rather than ignored; ``why``
    ends the message (where the expected shape comes from).
    """
    if key not in state_dict:
        return
    kernel = state_dict.pop(key)
    same = kernel.shape == expected.shape and (
        kernel.is_meta or torch.equal(kernel.detach().cpu().double(), expected.double())
    )
    if not same:
        raise InvGraphError(
            f"{owner}: the state dict's {key!r} of shape {tuple(kernel.shape)} does not hold "
            f"FrEIA's fixed kernel, expected of shape {tuple(expected.shape)}{why}"
        )


def drop_householder_matrix(state_dict: MutableMapping[str, Tensor], prefix: str) -> None:
    """Drop what FrEIA's fixed ``HouseholderPerm`` also saves: the product of its
    reflections (``W``, ``weight``), which invgraph never assembles."""
    for key in ("W", "weight"):
        state_dict.pop(prefix + key, None)


def infer_actnorm_initialised(
    state_dict: Mapping[str, Tensor], prefix: str, missing_keys: list[str]
) -> bool | None:
    """Whether a loaded ActNorm is initialised: its saved flag, or ``True`` for a FrEIA 0.2
    state dict (``scale`` and ``bias`` without the flag, which FrEIA does not save; as in
    FrEIA, loading parameters initialises). ``None`` when the state dict says nothing.

    A FrEIA flag reported missing is removed from ``missing_keys`` (a strict load passes).
    """
    flag = prefix + "is_initialized"
    if flag in state_dict:
        return bool(state_dict[flag])
    if prefix + "scale" in state_dict and flag in missing_keys:
        missing_keys.remove(flag)
        return True
    return None
