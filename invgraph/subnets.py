r"""Subnetworks for coupling blocks: a dense :class:`MLP` and a convolutional :class:`ConvNet`.

A coupling block builds each of its subnetworks by calling ``subnet_constructor(c_in, c_out)``.
Both classes here take ``(c_in, c_out)`` first, so the class itself is a constructor, and
:func:`functools.partial` sets its other arguments:

.. code-block:: python

    inn.append(ig.GLOWCouplingBlock, subnet_constructor=MLP)  # 2 hidden layers of 64
    inn.append(ig.GLOWCouplingBlock, subnet_constructor=functools.partial(MLP, hidden=128))

A partial of a module-level class pickles, so the network saves with ``torch.save``; a
``lambda`` does not. The last layer of both starts at zero: the subnetwork outputs zeros,
so an affine, additive or spline coupling built with it starts as the identity, and a deep
flow starts well conditioned (Glow's initialisation). The other layers keep PyTorch's
default initialisation.

Both are :class:`torch.nn.Sequential`\ s of plain layers: ``MLP(c_in, c_out, hidden=64)``
holds the layers of ``nn.Sequential(nn.Linear(c_in, 64), nn.ReLU(), nn.Linear(64, 64),
nn.ReLU(), nn.Linear(64, c_out))`` in that order, with the same state-dict keys and, from the
same seed, the same initial weights.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .errors import InvGraphError

__all__ = ["MLP", "ConvNet"]

Activation = Callable[[], nn.Module]
"""Builds one activation module: a class such as ``nn.ReLU``, or a callable without arguments."""


def _check_int(owner: str, name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InvGraphError(f"{owner}: {name} must be {kind}, got {value!r}")


def _check_activation(owner: str, activation: object) -> None:
    """Fail early, before any layer is built, on a common mistake: a module or a function."""
    if isinstance(activation, nn.Module):
        raise InvGraphError(
            f"{owner}: activation must build a new module for each layer: pass the class "
            f"({type(activation).__name__}), not a module ({activation!r})"
        )
    if not callable(activation):
        raise InvGraphError(
            f"{owner}: activation must be a module class such as nn.ReLU, got {activation!r}"
        )


def _activation(owner: str, activation: Activation) -> nn.Module:
    try:
        module = activation()
    except TypeError as err:
        raise InvGraphError(
            f"{owner}: activation must be callable without arguments and return an nn.Module "
            f"(nn.ReLU, functools.partial(nn.LeakyReLU, 0.2)); calling {activation!r} failed: "
            f"{err}"
        ) from err
    if not isinstance(module, nn.Module):
        raise InvGraphError(
            f"{owner}: activation must return an nn.Module (nn.ReLU, not torch.relu); "
            f"{activation!r} returned {type(module).__name__}"
        )
    return module


def _zero_last(sequence: nn.Sequential) -> None:
    for tensor in sequence[-1].parameters():  # the last Linear or Conv2d: weight and bias
        nn.init.zeros_(tensor)


class MLP(nn.Sequential):
    r"""A dense network whose last layer starts at zero, the usual coupling subnetwork.

    With :math:`L` hidden layers of activation :math:`\sigma`,

    .. math::

        h_0 = x, \qquad h_k = \sigma(W_k h_{k-1} + b_k) \quad (1 \le k \le L), \qquad
        y = W_{L+1} h_L + b_{L+1},

    and :math:`W_{L+1} = 0`, :math:`b_{L+1} = 0` at initialisation, so that :math:`y = 0`.
    The layers are ``Linear, activation, ..., Linear``: the state-dict keys are ``0.weight``,
    ``0.bias``, ``2.weight``, ... as for the same ``nn.Sequential`` written by hand.

    Arguments:
        c_in: Input features.
        c_out: Output features.
        hidden: Units of each hidden layer.
        hidden_layers: Number of hidden layers; 0 gives one linear layer ``c_in -> c_out``.
        activation: Builds the activation after each hidden layer: a module class such as
            ``nn.ReLU`` or ``nn.SiLU``, or a callable without arguments that returns a module,
            e.g. ``functools.partial(nn.LeakyReLU, 0.2)``.

    Raises:
        InvGraphError: For a size that is not a positive integer, or an activation that
            does not build a module.

    References:
        Kingma, Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS
        2018, arXiv:1807.03039 (zero-initialised last layers: every coupling starts as the
        identity).

    Example:
        >>> import functools, torch
        >>> import invgraph as ig
        >>> from invgraph.subnets import MLP
        >>> MLP(2, 4, hidden=8, hidden_layers=1)
        MLP(
          (0): Linear(in_features=2, out_features=8, bias=True)
          (1): ReLU()
          (2): Linear(in_features=8, out_features=4, bias=True)
        )
        >>> subnet = functools.partial(MLP, hidden=32)  # hidden=32: a constructor(c_in, c_out)
        >>> inn = ig.SequenceINN(2)
        >>> inn.append(ig.GLOWCouplingBlock, subnet_constructor=subnet)
        >>> x = torch.randn(5, 2)
        >>> z, log_det = inn(x)
        >>> torch.equal(z, x), log_det  # the coupling starts as the identity
        (True, tensor([0., 0., 0., 0., 0.], grad_fn=<AddBackward0>))
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        hidden: int = 64,
        hidden_layers: int = 2,
        activation: Activation = nn.ReLU,
    ):
        for name, value in (("c_in", c_in), ("c_out", c_out), ("hidden", hidden)):
            _check_int("MLP", name, value, 1)
        _check_int("MLP", "hidden_layers", hidden_layers, 0)
        _check_activation("MLP", activation)
        layers: list[nn.Module] = []
        width = c_in
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden), _activation("MLP", activation)]
            width = hidden
        layers.append(nn.Linear(width, c_out))
        super().__init__(*layers)
        _zero_last(self)


class ConvNet(nn.Sequential):
    r"""A small convolutional network for images whose last layer starts at zero.

    Glow's coupling subnetwork: a :math:`k \times k` convolution ``c_in -> hidden``, then
    ``hidden_layers - 1`` convolutions :math:`1 \times 1` ``hidden -> hidden``, each followed
    by the activation, and a :math:`k \times k` convolution ``hidden -> c_out`` whose weights
    and bias start at zero. With the defaults: conv 3x3, ReLU, conv 1x1, ReLU, conv 3x3.
    Padding :math:`\lfloor k/2 \rfloor` keeps height and width, so ``(B, c_in, H, W)`` maps to
    ``(B, c_out, H, W)``.

    Arguments:
        c_in: Input channels.
        c_out: Output channels.
        hidden: Channels of each hidden layer.
        hidden_layers: Number of hidden layers: 1 gives conv k x k, activation, conv k x k;
            0 gives one convolution ``c_in -> c_out``.
        kernel_size: :math:`k`, the size of the first and the last convolution; odd, so
            that the padding keeps the image size.
        activation: Builds the activation after each hidden layer, as for :class:`MLP`.

    Raises:
        InvGraphError: For a size that is not a positive integer, an even kernel size, or an
            activation that does not build a module.

    References:
        Kingma, Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS
        2018, arXiv:1807.03039.

    Example:
        >>> import functools, torch
        >>> import invgraph as ig
        >>> from invgraph.subnets import ConvNet
        >>> ConvNet(4, 8, hidden=16)(torch.randn(2, 4, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
        >>> subnet = functools.partial(ConvNet, hidden=16)  # hidden=16: a constructor(c_in, c_out)
        >>> inn = ig.SequenceINN(4, 8, 8)
        >>> inn.append(ig.GLOWCouplingBlock, subnet_constructor=subnet)
        >>> x = torch.randn(3, 4, 8, 8)
        >>> z, log_det = inn(x)
        >>> torch.equal(z, x), log_det.abs().max().item()  # the coupling starts as the identity
        (True, 0.0)
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        hidden: int = 64,
        hidden_layers: int = 2,
        kernel_size: int = 3,
        activation: Activation = nn.ReLU,
    ):
        for name, value in (("c_in", c_in), ("c_out", c_out), ("hidden", hidden)):
            _check_int("ConvNet", name, value, 1)
        _check_int("ConvNet", "hidden_layers", hidden_layers, 0)
        _check_int("ConvNet", "kernel_size", kernel_size, 1)
        if kernel_size % 2 == 0:
            raise InvGraphError(
                f"ConvNet: kernel_size must be odd, so that the padding keeps the image size; "
                f"got {kernel_size}"
            )
        _check_activation("ConvNet", activation)
        padding = kernel_size // 2
        layers: list[nn.Module] = []
        for k in range(hidden_layers):
            if k == 0:
                layers.append(nn.Conv2d(c_in, hidden, kernel_size, padding=padding))
            else:
                layers.append(nn.Conv2d(hidden, hidden, 1))
            layers.append(_activation("ConvNet", activation))
        width = hidden if hidden_layers else c_in
        layers.append(nn.Conv2d(width, c_out, kernel_size, padding=padding))
        super().__init__(*layers)
        _zero_last(self)
