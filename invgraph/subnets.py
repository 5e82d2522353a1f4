r"""Subnetworks: a dense :class:`MLP` and a convolutional :class:`ConvNet` for coupling blocks,
and the masked :class:`MADE` conditioner of the autoregressive blocks.

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

from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InvGraphError

__all__ = [
    "MADE",
    "MLP",
    "Activation",
    "ConvNet",
    "MaskedLinear",
    "autoregressive_order",
    "build_activation",
    "check_activation",
]

Activation = Callable[[], nn.Module]
"""Builds one activation module: a class such as ``nn.ReLU``, or a callable without arguments."""


def _check_int(owner: str, name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InvGraphError(f"{owner}: {name} must be {kind}, got {value!r}")


def check_activation(owner: str, activation: object) -> None:
    """Fail early, before any layer is built, on a common mistake: a module or a function.

    Raises:
        InvGraphError: Naming ``owner``, for a module instance (which would be shared by
            every layer) or anything that is not callable.
    """
    if isinstance(activation, nn.Module):
        raise InvGraphError(
            f"{owner}: activation must build a new module for each layer: pass the class "
            f"({type(activation).__name__}), not a module ({activation!r})"
        )
    if not callable(activation):
        raise InvGraphError(
            f"{owner}: activation must be a module class such as nn.ReLU, got {activation!r}"
        )


def build_activation(owner: str, activation: Activation) -> nn.Module:
    """One new activation module from ``activation`` (a class or a callable without arguments).

    Raises:
        InvGraphError: Naming ``owner``, when calling ``activation`` fails or returns
            something other than an ``nn.Module`` (e.g. ``torch.relu``).
    """
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
        check_activation("MLP", activation)
        layers: list[nn.Module] = []
        width = c_in
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden), build_activation("MLP", activation)]
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
        check_activation("ConvNet", activation)
        padding = kernel_size // 2
        layers: list[nn.Module] = []
        for k in range(hidden_layers):
            if k == 0:
                layers.append(nn.Conv2d(c_in, hidden, kernel_size, padding=padding))
            else:
                layers.append(nn.Conv2d(hidden, hidden, 1))
            layers.append(build_activation("ConvNet", activation))
        width = hidden if hidden_layers else c_in
        layers.append(nn.Conv2d(width, c_out, kernel_size, padding=padding))
        super().__init__(*layers)
        _zero_last(self)


def autoregressive_order(
    features: int, ordering: str | Sequence[int] = "natural", seed: int | None = None
) -> Tensor:
    """The rank of each feature in an autoregressive order: a permutation of ``0 .. D-1``.

    Feature ``i`` may depend on the features of lower rank only.

    Arguments:
        features: ``D``.
        ordering: ``"natural"`` (rank ``i`` for feature ``i``), ``"reversed"``, ``"random"``
            (a permutation drawn from ``seed``), or the ranks themselves, a permutation of
            ``range(D)``.
        seed: Seed of the ``"random"`` ordering (``None``: drawn from torch's global
            generator, so the ordering is saved in the state dict, never re-drawn).

    Raises:
        InvGraphError: For an unknown name or ranks that are not a permutation of ``range(D)``.

    Example:
        >>> autoregressive_order(4, "reversed").tolist()
        [3, 2, 1, 0]
    """
    if isinstance(ordering, str):
        if ordering == "natural":
            return torch.arange(features)
        if ordering == "reversed":
            return torch.arange(features - 1, -1, -1)
        if ordering == "random":
            generator = None if seed is None else torch.Generator().manual_seed(seed)
            return torch.randperm(features, generator=generator)
        raise InvGraphError(
            f"unknown ordering {ordering!r}: use 'natural', 'reversed', 'random' or a "
            f"permutation of range({features})"
        )
    ranks = [int(r) for r in ordering]
    if sorted(ranks) != list(range(features)):
        raise InvGraphError(f"ordering {ranks} is not a permutation of range({features})")
    return torch.tensor(ranks)


class MaskedLinear(nn.Linear):
    r"""A linear layer with a fixed 0/1 mask on its weight: :math:`y = (W \odot M) x + b`.

    Arguments:
        mask: ``(out_features, in_features)``; kept as a buffer (saved, moved with the module).
    """

    mask: Tensor

    def __init__(self, mask: Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def masked_weight(self) -> Tensor:
        r""":math:`W \odot M`, the weight the layer applies."""
        return self.weight * self.mask

    def forward(self, x: Tensor, masked_weight: Tensor | None = None) -> Tensor:
        """``masked_weight``: :meth:`masked_weight`, computed once for several calls."""
        weight = self.masked_weight() if masked_weight is None else masked_weight
        return F.linear(x, weight, self.bias)


class MADE(nn.Module):
    r"""A masked autoencoder (MADE): outputs for feature :math:`i` depend on earlier features only.

    Each feature :math:`i` of :math:`x \in \mathbb{R}^D` has a rank :math:`r_i` (see
    :func:`autoregressive_order`); hidden unit :math:`j` has a degree :math:`m_j`. A unit of
    degree :math:`m` sees the features of rank :math:`\le m` and the hidden units of the
    layer below of degree :math:`\le m`; the ``params`` outputs of feature :math:`i` see the
    last hidden units of degree :math:`< r_i`. So

    .. math::

        h(x, c)_i = h_i(x_{r < r_i}, c), \qquad
        \frac{\partial h(x, c)_i}{\partial x_j} = 0 \text{ unless } r_j < r_i,

    the Jacobian of an autoregressive flow built on it is triangular in the order of ranks.
    Ranks run from 0 to :math:`D - 1`. The context :math:`c` enters every unit unmasked. The
    degrees of each hidden layer cycle through :math:`-1 .. D - 2` (degree -1: the context
    only), or :math:`0 .. D - 2` without a context, where degree -1 units would be constants.
    With ``residual``, hidden layer :math:`k > 1` computes :math:`h_k = h_{k-1} + \sigma(W_k
    h_{k-1} + b_k)`; its mask keeps the diagonal, so the skip respects the order. The last
    layer starts at zero: an
    autoregressive block built on it starts as the identity.

    Arguments:
        features: :math:`D`.
        params: Outputs per feature, e.g. 2 for an affine map, :math:`3K - 1` for a spline.
        context: Size of the context vector :math:`c` (0: none).
        hidden: The width of each hidden layer.
        ordering: The features' ranks, see :func:`autoregressive_order`.
        seed: Seed of a ``"random"`` ordering.
        activation: Builds the activation after each hidden layer, as for :class:`MLP`.
        residual: Skip connections around hidden layers 2 and up (equal widths needed).

    Shapes:
        ``forward(x, context=None, masked_weights=None)``: ``x`` is ``(N, D)``, ``context``
        ``(N, context)``; returns ``(N, D, params)``. ``masked_weights``: those of
        :meth:`masked_weights`, computed once for several calls with the same weights.

    References:
        Germain, Gregor, Murray, Larochelle, "MADE: Masked Autoencoder for Distribution
        Estimation", ICML 2015, arXiv:1502.03509.

    Example:
        >>> import torch
        >>> from invgraph.subnets import MADE
        >>> made = MADE(3, params=2, hidden=(16, 16))
        >>> made(torch.randn(5, 3)).shape
        torch.Size([5, 3, 2])
        >>> _ = torch.nn.init.normal_(made.layers[-1].weight)  # away from the zero init
        >>> x = torch.randn(1, 3)
        >>> jacobian = torch.autograd.functional.jacobian(lambda x: made(x)[0, :, 0], x)[:, 0]
        >>> (jacobian != 0).int().tolist()  # output i sees inputs before i only
        [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
    """

    ranks: Tensor

    def __init__(
        self,
        features: int,
        params: int,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        ordering: str | Sequence[int] = "natural",
        seed: int | None = None,
        activation: Activation = nn.ReLU,
        residual: bool = False,
    ):
        super().__init__()
        _check_int("MADE", "features", features, 1)
        _check_int("MADE", "params", params, 1)
        _check_int("MADE", "context", context, 0)
        hidden = tuple(hidden)
        for width in hidden:
            _check_int("MADE", "a hidden width", width, 1)
        if residual and len(set(hidden)) > 1:
            raise InvGraphError(
                f"MADE: residual connections need equal hidden widths, got {hidden}"
            )
        check_activation("MADE", activation)
        self.features, self.params, self.context, self.residual = (
            features,
            params,
            context,
            residual,
        )
        ranks = autoregressive_order(features, ordering, seed)
        self.register_buffer("ranks", ranks)
        # Degrees: feature i has degree r_i, the context -1 (seen by every unit). Hidden
        # degrees cycle through -1 .. D - 2 with a context, 0 .. D - 2 without (a unit of
        # degree D - 1 would feed no output, one of degree -1 without context is a constant).
        low = -1 if context else 0
        span = max(features - 1 - low, 1)
        degrees_in = torch.cat([ranks, torch.full((context,), -1)])
        layers: list[MaskedLinear] = []
        for width in hidden:
            degrees = (low + torch.arange(width) % span).clamp(max=features - 2).clamp(min=-1)
            layers.append(MaskedLinear(degrees[:, None] >= degrees_in[None, :]))
            degrees_in = degrees
        output_ranks = ranks.repeat_interleave(params)  # feature-major: (D, params) rows
        layers.append(MaskedLinear(output_ranks[:, None] > degrees_in[None, :]))
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.layers = nn.ModuleList(layers)
        self.activations = nn.ModuleList(build_activation("MADE", activation) for _ in hidden)

    def masked_weights(self) -> list[Tensor]:
        r"""Each layer's :math:`W \odot M`, to compute once for several calls (an
        autoregressive inverse calls the MADE once per feature) and pass to :meth:`forward`."""
        return [layer.masked_weight() for layer in cast("list[MaskedLinear]", list(self.layers))]

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        masked_weights: Sequence[Tensor] | None = None,
    ) -> Tensor:
        weights = [None] * len(self.layers) if masked_weights is None else masked_weights
        h = x if context is None else torch.cat([x, context], dim=-1)
        for k, (layer, weight, activation) in enumerate(
            zip(self.layers[:-1], weights, self.activations)
        ):
            step = activation(layer(h, weight))
            h = h + step if self.residual and k > 0 else step
        return self.layers[-1](h, weights[-1]).unflatten(-1, (self.features, self.params))

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, params={self.params}, context={self.context}, "
            f"residual={self.residual}"
        )
