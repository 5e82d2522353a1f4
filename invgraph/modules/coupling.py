r"""Coupling blocks: one base owns the split, the conditions and the log-det; each variant
supplies only its element-wise bijection.

A coupling block splits its input along the channels, :math:`x = [x_1, x_2]`, and
transforms one half element-wise with parameters computed from the other half (and the
conditions :math:`c`):

.. math::

    y_1 = \tau(x_1; \theta_1(x_2, c)), \qquad y_2 = \tau(x_2; \theta_2(y_1, c)).

Both steps have triangular Jacobians, so :math:`\log|\det J| = \log|\det J_\tau^{(1)}|
+ \log|\det J_\tau^{(2)}|`, a sum of element-wise log-derivatives; the inverse undoes the
steps in reverse order. A one-sided block performs only the second step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import InvGraphError
from .base import InvertibleModule, LogDet, Shape, single_input, sum_except_batch
from .clamping import ClampActivation, resolve_clamp

__all__ = [
    "AffineCouplingBase",
    "AffineCouplingOneSided",
    "ConditionalAffineTransform",
    "CouplingBlock",
    "GINCouplingBlock",
    "GLOWCouplingBlock",
    "NICECouplingBlock",
    "RNVPCouplingBlock",
    "SubnetConstructor",
    "broadcast_conditions",
    "concat_conditions",
    "split_channels",
    "subnet_constructor_or_error",
]

SubnetConstructor = Callable[[int, int], nn.Module]
"""``constructor(channels_in, channels_out) -> nn.Module``: the user decides dense or conv."""

StepLogDet = Tensor | float
"""The log-det of one coupling step: a coupling always computes it (never ``None``)."""


def broadcast_conditions(owner: str, dims_in: Shape, dims_c: Sequence[Shape]) -> int:
    """Check that conditions fit an input of shape ``dims_in``; return their channel count.

    A condition of shape ``(C_c, *spatial)`` must have the input's spatial shape; a vector
    condition ``(C_c,)`` fed to an image input is broadcast over the spatial dimensions.
    """
    spatial = tuple(dims_in[1:])
    for k, shape in enumerate(dims_c):
        if not shape:
            raise InvGraphError(f"{owner}: condition {k} has no dimensions; give at least (1,)")
        if tuple(shape[1:]) != spatial and len(shape) != 1:
            raise InvGraphError(
                f"{owner}: condition {k} has shape {tuple(shape)}; for an input of shape "
                f"{tuple(dims_in)} it must be ({shape[0]}, {', '.join(map(str, spatial))}) "
                f"or a vector ({shape[0]},), which is broadcast over the spatial dimensions"
            )
    return sum(shape[0] for shape in dims_c)


def concat_conditions(u: Tensor, c: Sequence[Tensor]) -> Tensor:
    """``[u, c_1, c_2, ...]`` along the channels, vector conditions expanded to ``u``'s size."""
    if not c:
        return u
    spatial = u.shape[2:]
    pieces = [u]
    for condition in c:
        if condition.dim() == 2 and spatial:
            condition = condition.reshape(*condition.shape, *([1] * len(spatial)))
            condition = condition.expand(-1, -1, *spatial)
        pieces.append(condition)
    return torch.cat(pieces, dim=1)


def _coupling_advice(shape: Shape) -> str:
    """What to do instead of coupling an input whose channels cannot be split in two."""
    if shape[0] > 1:
        return (
            f"give split_len between 1 and {shape[0] - 1} (or a fraction rounding there); a "
            "map of the whole input driven by conditions alone is ConditionalAffineTransform"
        )
    if len(shape) == 1:
        return (
            "a single feature cannot be coupled: use an element-wise block instead (e.g. "
            "ElementwiseRationalQuadraticSpline or ActNorm), or couple a wider vector"
        )
    squeeze = ""
    if len(shape) == 3:
        squeeze = (
            f"a HaarDownsampling or IRevNetDownsampling ({shape} -> "
            f"(4, {shape[1] // 2}, {shape[2] // 2})) or "
        )
    return f"put {squeeze}a Flatten before it, so that the split has channels to share"


def split_channels(
    block: str, shape: Shape, split_len: float | int, passive_may_be_empty: bool = False
) -> tuple[int, int]:
    """The channel counts :math:`(C_1, C_2)` of a coupling's halves, checked non-empty.

    Arguments:
        block: The block's name, for the messages.
        shape: The input shape ``(C, ...)``.
        split_len: :math:`C_1`: a fraction of ``C`` (rounded) or a count.
        passive_may_be_empty: Allow :math:`C_1 = 0`, for blocks whose bijection of
            :math:`x_2` is driven by the conditions (or parameters) alone, by design.

    Raises:
        InvGraphError: For a split that leaves a half empty (a block that would transform
            nothing, or transform from nothing), naming the shape, the halves and a remedy.

    Example:
        >>> split_channels("GLOWCouplingBlock", (5, 8, 8), 0.5)  # round(2.5) = 2
        (2, 3)
        >>> try:
        ...     split_channels("GLOWCouplingBlock", (1, 8, 8), 0.5)
        ... except InvGraphError as err:
        ...     print(str(err)[:80])
        GLOWCouplingBlock: input shape (1, 8, 8) has 1 channel; a coupling splits the ch
    """
    channels = shape[0]
    if isinstance(split_len, float):
        if not 0.0 <= split_len <= 1.0:
            raise InvGraphError(f"{block}: a fractional split_len must be in [0, 1]")
        split_len = round(channels * split_len)
    if not 0 <= split_len <= channels:
        raise InvGraphError(f"{block}: split_len={split_len} for {channels} channels")
    halves = (int(split_len), channels - int(split_len))
    if halves[1] > 0 and (halves[0] > 0 or passive_may_be_empty):
        return halves
    plural = "s" if channels != 1 else ""
    raise InvGraphError(
        f"{block}: input shape {shape} has {channels} channel{plural}; a coupling splits the "
        f"channels into two non-empty halves, here split_len={halves}: "
        f"{_coupling_advice(shape)}"
    )


class CouplingBlock(InvertibleModule):
    r"""Base of the coupling blocks: split, conditions, merge and log-det sums.

    A subclass builds its subnetworks in ``__init__`` and implements two methods:

    * ``_conditioner(side, u)``: the parameters of the bijection of half ``side`` (0 for
      :math:`x_1`, 1 for :math:`x_2`), from ``u``, the other half with the conditions
      concatenated along the channels;
    * ``_bijection(side, x, parameters, rev)``: the element-wise map and its per-sample
      log-det, :math:`(\tau(x), \log|\det J_\tau|)` or, with ``rev``, the inverse map and
      its log-det.

    Arguments:
        dims_in: One input shape ``(C, ...)``; the split is along ``C``.
        dims_c: Condition shapes, ``(C_c, *spatial)`` or vectors ``(C_c,)`` (broadcast).
        split_len: Channels of :math:`x_1`: a fraction of ``C`` (rounded) or a count.
        two_sided: Transform both halves (``False``: only :math:`x_2`, from :math:`x_1`).

    Raises:
        InvGraphError: For a split that leaves a half empty, e.g. any input of one channel:
            such a block would silently transform nothing, or from nothing (see
            :func:`split_channels`). Only blocks driven by their conditions alone by design
            (:class:`ConditionalAffineTransform`) have an empty passive half.
    """

    #: The passive half :math:`x_1` may be empty: the bijection of :math:`x_2` is driven by
    #: the conditions (or the block's parameters) alone, by design.
    _passive_may_be_empty: ClassVar[bool] = False

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None = None,
        split_len: float | int = 0.5,
        two_sided: bool = True,
    ):
        super().__init__(dims_in, dims_c)
        name = type(self).__name__
        shape = single_input(name, self.dims_in)
        halves = split_channels(name, shape, split_len, self._passive_may_be_empty)
        self.split_len1, self.split_len2 = halves
        self.condition_length = broadcast_conditions(name, self.dims_in[0], self.dims_c)
        self.two_sided = two_sided

    def _conditioner(self, side: int, u: Tensor) -> Any:
        raise NotImplementedError

    def _bijection(
        self, side: int, x: Tensor, parameters: Any, rev: bool
    ) -> tuple[Tensor, StepLogDet]:
        raise NotImplementedError

    def _step(
        self, side: int, x: Tensor, u: Tensor, c: Sequence[Tensor], rev: bool
    ) -> tuple[Tensor, StepLogDet]:
        parameters = self._conditioner(side, concat_conditions(u, c))
        # Under autocast the subnets run in low precision; the bijection runs in the data's
        # precision, so that forward and inverse stay exact inverses of each other.
        if isinstance(parameters, Tensor):
            parameters = parameters.to(x.dtype)
        elif isinstance(parameters, tuple):
            parameters = tuple(p.to(x.dtype) for p in parameters)
        return self._bijection(side, x, parameters, rev)

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], LogDet]:
        x1, x2 = torch.split(x_or_z[0], [self.split_len1, self.split_len2], dim=1)
        log_det: StepLogDet = 0.0
        if not rev:
            if self.two_sided:
                x1, log_det = self._step(0, x1, x2, c, rev)
            x2, log_det_2 = self._step(1, x2, x1, c, rev)
        else:
            x2, log_det_2 = self._step(1, x2, x1, c, rev)
            if self.two_sided:
                x1, log_det = self._step(0, x1, x2, c, rev)
        return (torch.cat([x1, x2], dim=1),), log_det + log_det_2

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        if [tuple(s) for s in input_dims] != self.dims_in:
            raise InvGraphError(
                f"{type(self).__name__}: built for {self.dims_in}, got {list(input_dims)}"
            )
        return list(self.dims_in)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, split_len=({self.split_len1}, {self.split_len2})"


def subnet_constructor_or_error(
    owner: str, constructor: SubnetConstructor | None
) -> SubnetConstructor:
    """``constructor``, or an error naming ``owner`` when a block was given none."""
    if constructor is None:
        raise InvGraphError(
            f"{owner}: needs subnet_constructor(channels_in, channels_out) -> nn.Module"
        )
    return constructor


class NICECouplingBlock(CouplingBlock):
    r"""Additive coupling (NICE): :math:`y_1 = x_1 + F(x_2, c)`, :math:`y_2 = x_2 + G(y_1, c)`.

    Volume preserving: :math:`\log|\det J| = 0`.

    Arguments:
        dims_in: One input shape ``(C, ...)``.
        dims_c: Condition shapes.
        subnet_constructor: ``constructor(c_in, c_out)``; builds ``F`` and ``G``.
        split_len: Channels of :math:`x_1` (fraction or count).

    References:
        Dinh, Krueger, Bengio, "NICE: Non-linear Independent Components Estimation",
        ICLR 2015 workshop, arXiv:1410.8516.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from invgraph.modules import NICECouplingBlock
        >>> block = NICECouplingBlock([(4,)], subnet_constructor=nn.Linear)
        >>> (z,), log_det = block((torch.randn(3, 4),))
        >>> z.shape, log_det
        (torch.Size([3, 4]), 0.0)
    """

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None = None,
        subnet_constructor: SubnetConstructor | None = None,
        split_len: float | int = 0.5,
    ):
        super().__init__(dims_in, dims_c, split_len)
        make = subnet_constructor_or_error(type(self).__name__, subnet_constructor)
        self.F = make(self.split_len2 + self.condition_length, self.split_len1)
        self.G = make(self.split_len1 + self.condition_length, self.split_len2)

    def _conditioner(self, side: int, u: Tensor) -> Tensor:
        return self.F(u) if side == 0 else self.G(u)

    def _bijection(self, side: int, x: Tensor, shift: Tensor, rev: bool) -> tuple[Tensor, float]:
        return (x - shift if rev else x + shift), 0.0


class AffineCouplingBase(CouplingBlock):
    r"""Base of the affine couplings: the bijection :math:`y = x\,e^{s} + t` with the
    soft-clamped log-scale :math:`s = \text{clamp}\cdot f(\tilde s)`; its log-det is
    :math:`\sum s`. A subclass builds its subnetworks and supplies ``_conditioner``."""

    #: Subtract the mean log-scale of each sample: volume preserving (GIN).
    _volume_preserving = False

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None,
        clamp: float,
        clamp_activation: str | ClampActivation,
        split_len: float | int,
        two_sided: bool = True,
    ):
        super().__init__(dims_in, dims_c, split_len, two_sided)
        self.clamp = float(clamp)
        self.f_clamp = resolve_clamp(clamp_activation)

    def _bijection(
        self, side: int, x: Tensor, parameters: tuple[Tensor, Tensor], rev: bool
    ) -> tuple[Tensor, StepLogDet]:
        raw_log_scale, shift = parameters
        log_scale = self.clamp * self.f_clamp(raw_log_scale)
        if self._volume_preserving:
            log_scale = log_scale - log_scale.mean(dim=1, keepdim=True)
        y = (x - shift) * torch.exp(-log_scale) if rev else x * torch.exp(log_scale) + shift
        if self._volume_preserving:
            return y, 0.0
        log_det = sum_except_batch(log_scale)
        return y, -log_det if rev else log_det


def _halves(a: Tensor, first: int) -> tuple[Tensor, Tensor]:
    """A subnet's output ``[s, t]`` split along the channels."""
    return a[:, :first], a[:, first:]


class RNVPCouplingBlock(AffineCouplingBase):
    r"""Affine coupling (RealNVP) with separate scale and shift networks per half.

    :math:`y_1 = x_1 e^{s_2(x_2, c)} + t_2(x_2, c)`, :math:`y_2 = x_2 e^{s_1(y_1, c)} +
    t_1(y_1, c)`, log-scales soft-clamped to :math:`\pm` ``clamp``.

    Arguments:
        dims_in: One input shape ``(C, ...)``.
        dims_c: Condition shapes.
        subnet_constructor: ``constructor(c_in, c_out)``; builds four subnetworks.
        clamp: Bound of the log-scales.
        clamp_activation: The soft clamp: ``"ATAN"``, ``"TANH"``, ``"SIGMOID"`` or a callable.
        split_len: Channels of :math:`x_1` (fraction or count).

    References:
        Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", ICLR 2017,
        arXiv:1605.08803.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from invgraph.modules import RNVPCouplingBlock
        >>> block = RNVPCouplingBlock([(4,)], subnet_constructor=nn.Linear)
        >>> (z,), log_det = block((torch.randn(3, 4),))
        >>> z.shape, log_det.shape
        (torch.Size([3, 4]), torch.Size([3]))
    """

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None = None,
        subnet_constructor: SubnetConstructor | None = None,
        clamp: float = 2.0,
        clamp_activation: str | ClampActivation = "ATAN",
        split_len: float | int = 0.5,
    ):
        super().__init__(dims_in, dims_c, clamp, clamp_activation, split_len)
        make = subnet_constructor_or_error(type(self).__name__, subnet_constructor)
        in1, in2 = self.split_len1 + self.condition_length, self.split_len2 + self.condition_length
        self.subnet_s1 = make(in1, self.split_len2)
        self.subnet_t1 = make(in1, self.split_len2)
        self.subnet_s2 = make(in2, self.split_len1)
        self.subnet_t2 = make(in2, self.split_len1)

    def _conditioner(self, side: int, u: Tensor) -> tuple[Tensor, Tensor]:
        if side == 0:
            return self.subnet_s2(u), self.subnet_t2(u)
        return self.subnet_s1(u), self.subnet_t1(u)


class GLOWCouplingBlock(AffineCouplingBase):
    r"""Affine coupling (Glow) with one network per half predicting scale and shift.

    :math:`[\tilde s_2, t_2] = N_2(x_2, c)`, :math:`y_1 = x_1 e^{s_2} + t_2`;
    :math:`[\tilde s_1, t_1] = N_1(y_1, c)`, :math:`y_2 = x_2 e^{s_1} + t_1`, with
    :math:`s = \text{clamp}\cdot f(\tilde s)`.

    Arguments:
        dims_in: One input shape ``(C, ...)``.
        dims_c: Condition shapes, ``(C_c, *spatial)`` or vectors (broadcast over space).
        subnet_constructor: ``constructor(c_in, c_out)``; builds two subnetworks.
        clamp: Bound of the log-scales.
        clamp_activation: The soft clamp: ``"ATAN"``, ``"TANH"``, ``"SIGMOID"`` or a callable.
        split_len: Channels of :math:`x_1` (fraction or count).

    References:
        Kingma, Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        NeurIPS 2018, arXiv:1807.03039.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from invgraph.modules import GLOWCouplingBlock
        >>> conv = lambda c_in, c_out: nn.Conv2d(c_in, c_out, 3, padding=1)
        >>> block = GLOWCouplingBlock([(4, 8, 8)], dims_c=[(10,)], subnet_constructor=conv)
        >>> (z,), log_det = block((torch.randn(2, 4, 8, 8),), c=(torch.randn(2, 10),))
        >>> z.shape, log_det.shape
        (torch.Size([2, 4, 8, 8]), torch.Size([2]))
    """

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None = None,
        subnet_constructor: SubnetConstructor | None = None,
        clamp: float = 2.0,
        clamp_activation: str | ClampActivation = "ATAN",
        split_len: float | int = 0.5,
    ):
        super().__init__(dims_in, dims_c, clamp, clamp_activation, split_len)
        make = subnet_constructor_or_error(type(self).__name__, subnet_constructor)
        self.subnet1 = make(self.split_len1 + self.condition_length, 2 * self.split_len2)
        self.subnet2 = make(self.split_len2 + self.condition_length, 2 * self.split_len1)

    def _conditioner(self, side: int, u: Tensor) -> tuple[Tensor, Tensor]:
        if side == 0:
            return _halves(self.subnet2(u), self.split_len1)
        return _halves(self.subnet1(u), self.split_len2)


class GINCouplingBlock(GLOWCouplingBlock):
    r"""Volume-preserving affine coupling (GIN): Glow's coupling with log-scales of zero sum.

    Each sample's log-scales have their mean (over the transformed half) subtracted, so
    :math:`\log|\det J| = 0` while single dimensions still expand or contract.

    Arguments:
        dims_in: One input shape ``(C, ...)``.
        dims_c: Condition shapes.
        subnet_constructor: ``constructor(c_in, c_out)``; builds two subnetworks.
        clamp: Bound of the log-scales before centring.
        clamp_activation: The soft clamp: ``"ATAN"``, ``"TANH"``, ``"SIGMOID"`` or a callable.
        split_len: Channels of :math:`x_1` (fraction or count).

    References:
        Sorrenson, Rother, Köthe, "Disentanglement by Nonlinear ICA with General
        Incompressible-flow Networks (GIN)", ICLR 2020, arXiv:2001.04872.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from invgraph.modules import GINCouplingBlock
        >>> block = GINCouplingBlock([(6,)], subnet_constructor=nn.Linear)
        >>> (z,), log_det = block((torch.randn(3, 6),))
        >>> log_det
        0.0
    """

    _volume_preserving = True


class AffineCouplingOneSided(AffineCouplingBase):
    r"""One affine step: :math:`y_1 = x_1`, :math:`y_2 = x_2 e^{s(x_1, c)} + t(x_1, c)`.

    With a permutation or orthogonal transform after every block, transforming one half
    per block is no restriction.

    Arguments:
        dims_in: One input shape ``(C, ...)``.
        dims_c: Condition shapes.
        subnet_constructor: ``constructor(c_in, c_out)``; builds one subnetwork.
        clamp: Bound of the log-scales.
        clamp_activation: The soft clamp: ``"ATAN"``, ``"TANH"``, ``"SIGMOID"`` or a callable.
        split_len: Channels of :math:`x_1` (fraction or count).

    References:
        Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", ICLR 2017,
        arXiv:1605.08803.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from invgraph.modules import AffineCouplingOneSided
        >>> block = AffineCouplingOneSided([(4,)], subnet_constructor=nn.Linear)
        >>> x = torch.randn(3, 4)
        >>> (z,), _ = block((x,))
        >>> torch.equal(z[:, :2], x[:, :2])
        True
    """

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None = None,
        subnet_constructor: SubnetConstructor | None = None,
        clamp: float = 2.0,
        clamp_activation: str | ClampActivation = "ATAN",
        split_len: float | int = 0.5,
    ):
        super().__init__(dims_in, dims_c, clamp, clamp_activation, split_len, two_sided=False)
        make = subnet_constructor_or_error(type(self).__name__, subnet_constructor)
        self.subnet = make(self.split_len1 + self.condition_length, 2 * self.split_len2)

    def _conditioner(self, side: int, u: Tensor) -> tuple[Tensor, Tensor]:
        return _halves(self.subnet(u), self.split_len2)


class ConditionalAffineTransform(AffineCouplingOneSided):
    r"""An affine map of the whole input with parameters from the conditions only:
    :math:`y = x\,e^{s(c)} + t(c)`.

    The one-sided coupling with an empty passive half; it needs at least one condition.

    Arguments:
        dims_in: One input shape ``(C, ...)``.
        dims_c: Condition shapes (at least one).
        subnet_constructor: ``constructor(c_in, c_out)``; builds one subnetwork.
        clamp: Bound of the log-scales.
        clamp_activation: The soft clamp: ``"ATAN"``, ``"TANH"``, ``"SIGMOID"`` or a callable.

    References:
        Ardizzone et al., "Conditional Invertible Neural Networks for Diverse
        Image-to-Image Translation", GCPR 2020, arXiv:2105.02104.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from invgraph.modules import ConditionalAffineTransform
        >>> block = ConditionalAffineTransform([(4,)], dims_c=[(2,)], subnet_constructor=nn.Linear)
        >>> (z,), log_det = block((torch.randn(3, 4),), c=(torch.randn(3, 2),))
        >>> z.shape, log_det.shape
        (torch.Size([3, 4]), torch.Size([3]))
    """

    _passive_may_be_empty = True  # by design: the conditions alone drive the map

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None = None,
        subnet_constructor: SubnetConstructor | None = None,
        clamp: float = 2.0,
        clamp_activation: str | ClampActivation = "ATAN",
    ):
        if not dims_c:
            raise InvGraphError("ConditionalAffineTransform: needs at least one condition")
        super().__init__(dims_in, dims_c, subnet_constructor, clamp, clamp_activation, 0)
