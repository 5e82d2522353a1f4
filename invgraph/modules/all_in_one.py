"""AllInOneBlock: an affine coupling, a global affine transform and a permutation in one block."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InvGraphError
from .base import (
    InvertibleModule,
    LogDet,
    Shape,
    full_precision,
    mix_channels,
    single_input,
    sum_except_batch,
)
from .coupling import (
    SubnetConstructor,
    broadcast_conditions,
    concat_conditions,
    split_channels,
    subnet_constructor_or_error,
)
from .linear import householder_reflect, random_orthogonal

__all__ = ["AllInOneBlock", "GlobalAffineType"]

GlobalAffineType = Literal["SIGMOID", "SOFTPLUS", "EXP"]
r"""FrEIA's names of :math:`\Psi`, the activation of the global scale."""


def _sigmoid_scale(a: Tensor) -> Tensor:
    return 10.0 * torch.sigmoid(a - 2.0)


def _softplus_scale(a: Tensor) -> Tensor:
    return 0.1 * F.softplus(a, beta=0.5)


def _sigmoid_preimage(value: float) -> float:
    return 2.0 - math.log(10.0 / value - 1.0)


def _softplus_preimage(value: float) -> float:
    u = 5.0 * value  # 2 log(exp(u) - 1), without overflow for large u
    return 2.0 * (u + math.log(-math.expm1(-u)))


# name: (Psi, the pre-activation a with Psi(a) = value, exclusive bounds of value)
_GLOBAL_AFFINE: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[float], float], float]] = {
    "SIGMOID": (_sigmoid_scale, _sigmoid_preimage, 10.0),
    "SOFTPLUS": (_softplus_scale, _softplus_preimage, math.inf),
    "EXP": (torch.exp, math.log, math.inf),
}


def _random_rotation_or_permutation(n: int, soft: bool) -> Tensor:
    """A random ``(n, n)`` rotation (uniform on SO(n)) or permutation matrix.

    Drawn in float64 on the CPU from torch's global generator: the same on every device.
    """
    if soft:
        return random_orthogonal(n, haar=True, dtype=torch.float64, device="cpu")
    return torch.eye(n, dtype=torch.float64, device="cpu")[torch.randperm(n, device="cpu")]


def _orthogonalize(w: Tensor) -> Tensor:
    r"""One Newton-Schulz step to the nearest orthogonal matrix, :math:`W (3I - W^T W) / 2`.

    Leaves an orthogonal matrix as it is (to rounding) and makes a float32-rounded one, cast
    to float64, orthogonal to float64 precision.
    """
    return 1.5 * w - 0.5 * w @ (w.t() @ w)


class AllInOneBlock(InvertibleModule):
    r"""Affine coupling, global affine transform (ActNorm) and permutation, in one block.

    .. math::

        z = W \big(\Psi(s_g) \odot u + t_g\big), \qquad
        u = \mathrm{coupling}(P x), \qquad W = R\, H_1 \cdots H_k,

    with :math:`P = W^T` if ``reverse_permutation`` else :math:`I`. The coupling splits
    :math:`P x` along the channels into :math:`x_1` (the first :math:`\lceil C/2 \rceil`)
    and :math:`x_2`, and computes :math:`[\hat s, t] = 0.1\,\mathrm{subnet}([x_1, c])`,
    :math:`s = \alpha \tanh(\hat s)`, :math:`u = [x_1,\; x_2 \odot e^{s} + t]`. Then

    .. math:: \log|\det J| = \textstyle\sum s + N_\mathrm{pix} \sum_k \log \Psi(s_g)_k,

    where :math:`N_\mathrm{pix}` is the number of positions (1 for vectors). With
    ``gin_block``, :math:`s` has its mean over the sample subtracted and :math:`\Psi = 1`:
    the block preserves volume and its log-det is ``0.0``.

    :math:`R` is a fixed random permutation matrix, or with ``permute_soft`` a random
    rotation, and :math:`H_i = I - 2 v_i v_i^T / v_i^T v_i` are learned reflections,
    rebuilt from the parameters at every call. :math:`W` is orthogonal, so
    :math:`W^{-1} = W^T`. A rotation is re-orthogonalised at every call (one Newton-Schulz
    step, two :math:`C \times C` products): stored in float32 and cast to float64, it would
    be orthogonal only to :math:`10^{-7}`.

    Names and shapes of the state are FrEIA's, so FrEIA 0.2 checkpoints load strictly:
    parameters ``global_scale`` (a buffer with ``gin_block``, as it is unused),
    ``global_offset``, ``vk_householder`` and ``subnet.*``; buffers ``w_perm`` and
    ``w_perm_inv`` (shape ``(C, C, 1, ...)``), or ``w_0`` (``(C, C)``) with reflections.
    Unlike FrEIA, conditions may be vectors fed to image inputs (broadcast over space), the
    fixed matrices are buffers, not parameters, and whole blocks pickle and deep-copy.

    Arguments:
        dims_in: One input shape ``(C, *spatial)``, ``C >= 2``.
        dims_c: Condition shapes, ``(C_c, *spatial)`` or vectors ``(C_c,)``, concatenated
            to :math:`x_1` along the channels.
        subnet_constructor: ``constructor(channels_in, channels_out) -> nn.Module``.
        affine_clamping: :math:`\alpha`, the bound of the log-scales :math:`s`.
        gin_block: Volume preserving (GIN): centred log-scales, no global scale.
        global_affine_init: :math:`\Psi(s_g)` at initialisation (below 10 for ``"SIGMOID"``).
        global_affine_type: :math:`\Psi`: ``"SIGMOID"`` :math:`10\,\sigma(a - 2)`,
            ``"SOFTPLUS"`` :math:`0.2 \log(1 + e^{a/2})` or ``"EXP"`` :math:`e^a`.
        permute_soft: :math:`R` a random rotation (uniform on SO(C)) instead of a permutation.
        learned_householder_permutation: :math:`k`, the number of learned reflections.
        reverse_permutation: Apply :math:`W^T` before the coupling as well (Putzky, Welling).

    References:
        Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", ICLR 2017,
        arXiv:1605.08803. Kingma, Dhariwal, "Glow: Generative Flow with Invertible 1x1
        Convolutions", NeurIPS 2018, arXiv:1807.03039. Sorrenson, Rother, Köthe,
        "Disentanglement by Nonlinear ICA with General Incompressible-flow Networks (GIN)",
        ICLR 2020, arXiv:2001.04872. Putzky, Welling, "Invert to Learn to Invert",
        NeurIPS 2019, arXiv:1911.10914. Tomczak, Welling, "Improving Variational
        Auto-Encoders using Householder Flow", arXiv:1611.09630.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from invgraph.modules.all_in_one import AllInOneBlock
        >>> block = AllInOneBlock([(6,)], [(2,)], nn.Linear, learned_householder_permutation=2)
        >>> x, c = torch.randn(3, 6), torch.randn(3, 2)
        >>> (z,), log_det = block((x,), c=(c,))
        >>> (x_back,), _ = block((z,), c=(c,), rev=True)
        >>> torch.allclose(x_back, x, atol=1e-5), log_det.shape
        (True, torch.Size([3]))
    """

    w_perm: Tensor
    w_perm_inv: Tensor
    w_0: Tensor

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None = None,
        subnet_constructor: SubnetConstructor | None = None,
        affine_clamping: float = 2.0,
        gin_block: bool = False,
        global_affine_init: float = 1.0,
        global_affine_type: GlobalAffineType = "SOFTPLUS",
        permute_soft: bool = False,
        learned_householder_permutation: int = 0,
        reverse_permutation: bool = False,
    ):
        super().__init__(dims_in, dims_c)
        channels, *spatial = shape = self.output_dims(self.dims_in)[0]
        self.splits = split_channels("AllInOneBlock", shape, channels - channels // 2)
        condition_channels = broadcast_conditions("AllInOneBlock", self.dims_in[0], self.dims_c)
        self.affine_clamping, self.gin_block = float(affine_clamping), bool(gin_block)
        self.permute_soft, self.reverse_permutation = bool(permute_soft), bool(reverse_permutation)
        self.householder = int(learned_householder_permutation)
        if self.householder < 0:
            raise InvGraphError(
                f"AllInOneBlock: learned_householder_permutation must be >= 0, "
                f"received {learned_householder_permutation}"
            )
        self.global_affine_type = str(global_affine_type).upper()
        if self.global_affine_type not in _GLOBAL_AFFINE:
            raise InvGraphError(
                f"AllInOneBlock: global_affine_type must be one of {list(_GLOBAL_AFFINE)}, "
                f"received {global_affine_type!r}"
            )
        _, preimage, bound = _GLOBAL_AFFINE[self.global_affine_type]
        if not 0.0 < global_affine_init < bound:
            raise InvGraphError(
                f"AllInOneBlock: global_affine_init must be in (0, {bound}) for "
                f"{self.global_affine_type}, received {global_affine_init}"
            )

        ones = (1,) * len(spatial)
        scale = torch.full((1, channels, *ones), preimage(float(global_affine_init)))
        if self.gin_block:  # unused: kept for FrEIA's state dict, out of .parameters()
            self.register_buffer("global_scale", scale)
        else:
            self.global_scale = nn.Parameter(scale)
        self.global_offset = nn.Parameter(torch.zeros(1, channels, *ones))

        # stored like any module's tensors: default dtype, device of a `with torch.device()`
        w = _random_rotation_or_permutation(channels, self.permute_soft)
        w = w.to(torch.empty(0).device, torch.get_default_dtype())
        if self.householder:
            self.vk_householder = nn.Parameter(0.2 * torch.randn(self.householder, channels))
            self.register_buffer("w_0", w)
        else:  # w_perm_inv = w_perm^T is kept for FrEIA's state dict; W^T is used instead
            self.register_buffer("w_perm", w.reshape(channels, channels, *ones))
            self.register_buffer("w_perm_inv", w.t().reshape(channels, channels, *ones))
        make = subnet_constructor_or_error("AllInOneBlock", subnet_constructor)
        self.subnet = make(self.splits[0] + condition_channels, 2 * self.splits[1])

    def _global_scale(self) -> Tensor | None:
        r""":math:`\Psi(s_g)`, shape ``(1, C, 1, ...)``; ``None`` for a GIN block (no scaling)."""
        if self.gin_block:
            return None
        return _GLOBAL_AFFINE[self.global_affine_type][0](self.global_scale)

    def _mixing_matrix(self) -> Tensor:
        """:math:`W`, the ``(C, C)`` orthogonal matrix applied after the coupling."""
        w = self.w_0 if self.householder else self.w_perm.reshape(self.w_perm.shape[:2])
        if not (self.permute_soft or self.householder):
            return w  # a fixed permutation
        with full_precision(w):  # an orthogonal W, also under autocast
            if self.permute_soft:
                w = _orthogonalize(w)
            for k in range(self.householder):  # W H_k: each row of W reflected
                w = householder_reflect(w, self.vk_householder[k])
        return w

    def _coupling(self, x: Tensor, c: Sequence[Tensor], rev: bool) -> tuple[Tensor, Tensor]:
        """The affine map of :math:`x_2` given :math:`x_1` and ``c``, and its log-scales."""
        # torch.split takes any sequence of sizes; its annotation says list[int]
        x1, x2 = torch.split(x, self.splits, dim=1)  # type: ignore[arg-type]
        # the subnet may run in low precision (autocast); the affine map runs in the data's
        a = 0.1 * self.subnet(concat_conditions(x1, c)).to(x.dtype)
        log_scale = self.affine_clamping * torch.tanh(a[:, : self.splits[1]])
        if self.gin_block:  # centred over the whole sample: volume preserving
            per_sample = tuple(range(1, log_scale.dim()))
            log_scale = log_scale - log_scale.mean(dim=per_sample, keepdim=True)
        shift = a[:, self.splits[1] :]
        x2 = (x2 - shift) * torch.exp(-log_scale) if rev else x2 * torch.exp(log_scale) + shift
        return torch.cat([x1, x2], dim=1), log_scale

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], LogDet]:
        (x,) = x_or_z
        w, scale = self._mixing_matrix(), self._global_scale()
        if rev:
            x = mix_channels(x, w.t()) - self.global_offset
            x, log_scale = self._coupling(x if scale is None else x / scale, c, rev)
            x = mix_channels(x, w) if self.reverse_permutation else x
        else:
            x = mix_channels(x, w.t()) if self.reverse_permutation else x
            x, log_scale = self._coupling(x, c, rev)
            x = mix_channels((x if scale is None else x * scale) + self.global_offset, w)
        if not jac:
            return (x,), None
        if scale is None:
            return (x,), 0.0
        pixels = math.prod(self.dims_in[0][1:])
        log_det = sum_except_batch(log_scale) + pixels * torch.log(scale).sum()
        return (x,), -log_det if rev else log_det

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        return [single_input("AllInOneBlock", input_dims)]

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, affine_clamping={self.affine_clamping}, "
            f"gin_block={self.gin_block}, global_affine_type={self.global_affine_type!r}, "
            f"permute_soft={self.permute_soft}, "
            f"learned_householder_permutation={self.householder}, "
            f"reverse_permutation={self.reverse_permutation}"
        )
