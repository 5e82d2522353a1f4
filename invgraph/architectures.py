r"""Ready-made graphs: the node lists of common architectures, to pass to ``GraphINN``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from torch import nn

from .errors import InvGraphError
from .framework.nodes import AbstractNode, ConditionNode, InputNode, Node, OutputNode
from .modules.coupling import GLOWCouplingBlock
from .modules.graph_topology import Split
from .modules.linear import InvertibleConv1x1
from .modules.permutations import PermuteRandom
from .modules.reshapes import HaarDownsampling, IRevNetDownsampling

__all__ = ["multiscale_flow"]

_DOWNSAMPLING = {"haar": HaarDownsampling, "irevnet": IRevNetDownsampling}
_PERMUTATION = {"random": PermuteRandom, "conv1x1": InvertibleConv1x1}


def _check_arguments(
    input_dims: tuple[int, ...],
    levels: int,
    blocks_per_level: int,
    downsampling: str,
    permutation: str,
    split_fraction: float,
) -> None:
    who = "multiscale_flow"
    if len(input_dims) != 3 or min(input_dims) < 1:
        raise InvGraphError(f"{who}: input_dims must be an image shape (C, H, W), got {input_dims}")
    if levels < 1 or blocks_per_level < 0:
        raise InvGraphError(
            f"{who}: needs levels >= 1 and blocks_per_level >= 0, "
            f"got levels={levels}, blocks_per_level={blocks_per_level}"
        )
    _, height, width = input_dims
    factor = 2**levels
    if height % factor or width % factor:
        raise InvGraphError(
            f"{who}: {levels} level(s) halve the height and width {levels} time(s), so they "
            f"must be divisible by {factor}; got input_dims {input_dims}"
        )
    if downsampling not in _DOWNSAMPLING:
        raise InvGraphError(
            f"{who}: downsampling must be one of {sorted(_DOWNSAMPLING)}, got {downsampling!r}"
        )
    if permutation not in _PERMUTATION:
        raise InvGraphError(
            f"{who}: permutation must be one of {sorted(_PERMUTATION)}, got {permutation!r}"
        )
    if not 0.0 < split_fraction < 1.0:
        raise InvGraphError(f"{who}: split_fraction must be in (0, 1), got {split_fraction}")


def multiscale_flow(
    input_dims: Sequence[int],
    levels: int,
    blocks_per_level: int,
    subnet_constructor: Callable[[int, int], nn.Module],
    *,
    downsampling: Literal["haar", "irevnet"] = "haar",
    coupling: type[nn.Module] = GLOWCouplingBlock,
    coupling_args: dict[str, Any] | None = None,
    permutation: Literal["random", "conv1x1"] = "random",
    split_fraction: float = 0.5,
    condition_dims: Sequence[int] | None = None,
    prefix: str = "",
) -> list[AbstractNode]:
    r"""The node list of a RealNVP / Glow multiscale flow on images, for ``GraphINN``.

    Level :math:`\ell = 1, \dots, L` squeezes its input
    :math:`h_{\ell-1} \in \mathbb{R}^{C_{\ell-1} \times H_{\ell-1} \times W_{\ell-1}}`
    (:math:`h_0 = x`) to :math:`4 C_{\ell-1} \times H_{\ell-1}/2 \times W_{\ell-1}/2`, applies
    ``blocks_per_level`` pairs (coupling, permutation) :math:`g_\ell`, and factors out part
    of the channels as a latent:

    .. math::

        [z_\ell, h_\ell] = g_\ell(\mathrm{squeeze}(h_{\ell-1}); c), \quad \ell < L,
        \qquad z_L = g_L(\mathrm{squeeze}(h_{L-1}); c),

    so that :math:`\log p(x \mid c) = \sum_{\ell} \log p(z_\ell) + \sum_\ell \log|\det
    J_{g_\ell}|` (the squeezes and splits are volume preserving). The latents factored out
    early model the fine detail; the deeper levels, with larger receptive fields, the
    coarse structure. The total dimension is preserved: :math:`\sum_\ell |z_\ell| = CHW`.

    Outputs, in this order: :math:`z_1, \dots, z_{L-1}` (the early latents, first
    ``round(split_fraction * 4 C_{\ell-1})`` channels of level :math:`\ell`), then the final
    latent :math:`z_L`. Every latent keeps its image shape ``(C_\ell', H_\ell, W_\ell)``
    (apply ``Flatten`` yourself if you want vectors). With ``condition_dims``, one
    ``ConditionNode`` named ``f"{prefix}condition"`` feeds every coupling of every level; a
    vector condition ``(D,)`` is broadcast over space by the coupling, while an image
    condition must match the spatial size of every level (so, in practice, one level).

    Arguments:
        input_dims: The image shape ``(C, H, W)``; ``H`` and ``W`` divisible by ``2**levels``.
        levels: The number of levels :math:`L` (squeezes).
        blocks_per_level: The number of (coupling, permutation) pairs per level.
        subnet_constructor: ``constructor(c_in, c_out)`` for the couplings' subnetworks
            (e.g. small convolutional networks).
        downsampling: ``"haar"`` (:class:`~invgraph.modules.HaarDownsampling`) or
            ``"irevnet"`` (:class:`~invgraph.modules.IRevNetDownsampling`, Glow's squeeze).
        coupling: The coupling block class, built as ``coupling(dims_in, dims_c,
            subnet_constructor=..., **coupling_args)``.
        coupling_args: Further keyword arguments of ``coupling`` (e.g. ``{"clamp": 1.0}``).
        permutation: After each coupling: ``"random"`` (a fixed
            :class:`~invgraph.modules.PermuteRandom`) or ``"conv1x1"`` (Glow's learned
            :class:`~invgraph.modules.InvertibleConv1x1`).
        split_fraction: The fraction of the channels factored out at each level but the
            last (rounded, at least one channel on each side).
        condition_dims: The shape of a condition given to every coupling, or ``None``.
        prefix: Prepended to every node name (``"level1_coupling0"``, ``"z1"``...), to
            build several such flows in one graph.

    Returns:
        The nodes: the input node, the condition node if any, the blocks and the output
        nodes, ready for ``GraphINN(nodes)``.

    Raises:
        InvGraphError: For a non-image shape, a height or width not divisible by
            ``2**levels``, an unknown option, or a split leaving no channel on a side.

    References:
        Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", ICLR 2017,
        arXiv:1605.08803.

        Kingma, Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        NeurIPS 2018, arXiv:1807.03039.

    Example:
        >>> import torch, invgraph as ig
        >>> from torch import nn
        >>> from invgraph.architectures import multiscale_flow
        >>> conv = lambda c_in, c_out: nn.Conv2d(c_in, c_out, 3, padding=1)
        >>> inn = ig.GraphINN(multiscale_flow((1, 8, 8), 2, 1, conv, condition_dims=(10,)))
        >>> (z1, z2), log_det = inn(torch.randn(5, 1, 8, 8), c=torch.randn(5, 10))
        >>> tuple(z1.shape), tuple(z2.shape), tuple(log_det.shape)
        ((5, 2, 4, 4), (5, 8, 2, 2), (5,))
    """
    input_dims = tuple(int(d) for d in input_dims)
    options = (downsampling, permutation, split_fraction)
    _check_arguments(input_dims, levels, blocks_per_level, *options)
    args = {"subnet_constructor": subnet_constructor, **(coupling_args or {})}
    x = InputNode(*input_dims, name=f"{prefix}input")
    nodes: list[AbstractNode] = [x]
    condition = None
    if condition_dims is not None:
        condition = ConditionNode(*condition_dims, name=f"{prefix}condition")
        nodes.append(condition)
    outputs: list[AbstractNode] = []
    current: Any = x
    for level in range(1, levels + 1):
        name = f"{prefix}level{level}"
        current = Node(current, _DOWNSAMPLING[downsampling], name=f"{name}_downsampling")
        nodes.append(current)
        for k in range(blocks_per_level):
            current = Node(
                current, coupling, args, conditions=condition, name=f"{name}_coupling{k}"
            )
            nodes.append(current)
            current = Node(current, _PERMUTATION[permutation], name=f"{name}_permutation{k}")
            nodes.append(current)
        if level == levels:
            outputs.append(OutputNode(current, name=f"{prefix}z{level}"))
            break
        channels = current.output_dims[0][0]
        n_out = round(split_fraction * channels)
        if not 0 < n_out < channels:
            raise InvGraphError(
                f"multiscale_flow: split_fraction={split_fraction} of the {channels} channels "
                f"of level {level} leaves no channel on one side"
            )
        split = Node(current, Split, {"section_sizes": [n_out]}, name=f"{name}_split")
        nodes.append(split)
        outputs.append(OutputNode(split.out0, name=f"{prefix}z{level}"))
        current = split.out1
    return nodes + outputs
