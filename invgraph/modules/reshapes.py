"""Blocks that rearrange values without learning: flatten, reshape, and 2x2 squeezes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..compat import drop_fixed_tensor, renamed_argument
from ..errors import InvGraphError
from .base import InvertibleModule, Shape, single_input

__all__ = [
    "Flatten",
    "HaarDownsampling",
    "HaarUpsampling",
    "IRevNetDownsampling",
    "IRevNetUpsampling",
    "Reshape",
]


class Flatten(InvertibleModule):
    r"""Flatten each sample to a vector: :math:`(B, d_1, \dots, d_k) \to (B, d_1 \cdots d_k)`.

    A relabelling of the values, so :math:`\log|\det J| = 0`.

    Arguments:
        dims_in: One input shape.
        dims_c: Must be empty: the block takes no conditions.

    Example:
        >>> import torch
        >>> from invgraph.modules import Flatten
        >>> flatten = Flatten([(3, 4, 4)])
        >>> (z,), log_det = flatten((torch.randn(10, 3, 4, 4),))
        >>> z.shape, log_det
        (torch.Size([10, 48]), 0.0)
    """

    takes_conditions = False

    def __init__(
        self, dims_in: Sequence[Sequence[int]], dims_c: Sequence[Sequence[int]] | None = None
    ):
        super().__init__(dims_in, dims_c)
        self.output_dims(self.dims_in)

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], float]:
        (x,) = x_or_z
        if rev:
            return (x.unflatten(1, self.dims_in[0]),), 0.0
        return (x.flatten(1),), 0.0

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        return [(math.prod(single_input("Flatten", input_dims)),)]


class Reshape(InvertibleModule):
    r"""Reshape each sample: :math:`(B, d_1, \dots, d_k) \to (B, e_1, \dots, e_m)`, same count.

    A relabelling of the values in row-major order, so :math:`\log|\det J| = 0`. It is not
    spatially meaningful (e.g. ``(3, 32, 32) -> (12, 16, 16)`` mixes rows into channels);
    :class:`HaarDownsampling` and :class:`IRevNetDownsampling` are.

    Arguments:
        dims_in: One input shape.
        dims_c: Must be empty: the block takes no conditions.
        output_dims: The output shape without the batch dimension; it must hold as many
            elements as the input.
        target_dim: FrEIA's old name of ``output_dims``, still accepted (with a
            :class:`FutureWarning`).

    Example:
        >>> import torch
        >>> from invgraph.modules import Reshape
        >>> reshape = Reshape([(3, 4, 4)], output_dims=(12, 4))
        >>> (z,), log_det = reshape((torch.randn(10, 3, 4, 4),))
        >>> z.shape, log_det
        (torch.Size([10, 12, 4]), 0.0)
    """

    takes_conditions = False

    def __init__(
        self,
        dims_in: Sequence[Sequence[int]],
        dims_c: Sequence[Sequence[int]] | None = None,
        output_dims: Sequence[int] | None = None,
        target_dim: Sequence[int] | None = None,
    ):
        super().__init__(dims_in, dims_c)
        output_dims = renamed_argument(
            "Reshape", "target_dim", target_dim, "output_dims", output_dims
        )
        if output_dims is None:
            raise InvGraphError("Reshape: needs output_dims, the output shape without batch")
        self.target_shape: Shape = tuple(int(d) for d in output_dims)
        if min(self.target_shape, default=0) < 1:
            raise InvGraphError(
                f"Reshape: output_dims={self.target_shape} must be a non-empty shape of "
                "positive sizes"
            )
        self.output_dims(self.dims_in)

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], float]:
        (x,) = x_or_z
        shape = self.dims_in[0] if rev else self.target_shape
        return (x.reshape(x.shape[0], *shape),), 0.0

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        shape = single_input("Reshape", input_dims)
        if math.prod(shape) != math.prod(self.target_shape):
            raise InvGraphError(
                f"Reshape: cannot reshape input shape {shape} ({math.prod(shape)} elements) "
                f"to output_dims={self.target_shape} ({math.prod(self.target_shape)} elements); "
                "the element counts must agree"
            )
        return [self.target_shape]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, output_dims={self.target_shape}"


def _pixel_unshuffle(x: Tensor) -> Tensor:
    """:func:`torch.nn.functional.pixel_unshuffle` by 2: ``(B, C, H, W) -> (B, 4C, H/2, W/2)``.

    torch's CPU kernel returns an empty tensor unshuffled, with the input's shape (torch
    2.13: ``(0, 2, 4, 4)`` stays ``(0, 2, 4, 4)``); an empty input gets the right shape here.
    The branch reads the shape only, so non-empty inputs run the one kernel as before.
    """
    if x.numel() == 0:
        batch, channels, height, width = x.shape
        return x.new_empty(batch, 4 * channels, height // 2, width // 2)
    return F.pixel_unshuffle(x, 2)


class _Squeeze(InvertibleModule):
    """Shared base of the 2x2 squeezes: space to depth (down) and depth to space (up).

    Each 2x2 patch of a channel, read row by row, becomes 4 channels, optionally mixed by
    ``_mix``. By default the 4 values of one input channel are adjacent in the output
    (``c0p0, c0p1, c0p2, c0p3, c1p0...``); with ``group_by_position`` the output is grouped by
    patch position (or wavelet) instead (``c0p0, c1p0, ..., c0p1, c1p1...``). Subclasses set
    ``_upsampling = True`` to run the same map the other way round, and the constant
    log-dets of the down and up directions if ``_mix`` is not volume preserving.
    """

    _upsampling = False
    _log_det_down = 0.0
    _log_det_up = 0.0

    takes_conditions = False

    def __init__(
        self,
        dims_in: Sequence[Sequence[int]],
        dims_c: Sequence[Sequence[int]] | None,
        group_by_position: bool,
    ):
        super().__init__(dims_in, dims_c)
        self.output_dims(self.dims_in)
        self._group_by_position = bool(group_by_position)

    def _mix(self, patches: Tensor, inverse: bool) -> Tensor:
        """Map the patch values ``(B, C, 4, h, w)`` to the 4 output channels of each input one."""
        return patches

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Accept FrEIA 0.2 checkpoints: drop the fixed convolution kernel FrEIA saves.

        FrEIA stores ``haar_weights`` (Haar) or ``downsample_kernel`` (i-RevNet): the 2x2
        filters, repeated for each high-resolution channel. They are checked to be exactly
        those filters (anything else would be a different transform) and dropped.
        """
        haar = isinstance(self, HaarDownsampling)
        channels = self.dims_in[0][0] // (4 if self._upsampling else 1)
        identity = torch.eye(4, device="cpu")
        filters = _hadamard4(identity.unsqueeze(1), 1.0) if haar else identity
        expected = filters.reshape(4, 1, 2, 2).repeat(channels, 1, 1, 1)
        key = prefix + ("haar_weights" if haar else "downsample_kernel")
        why = f" for input shape {self.dims_in[0]}"
        drop_fixed_tensor(state_dict, key, expected, type(self).__name__, why)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _down(self, x: Tensor) -> Tensor:
        patches = _pixel_unshuffle(x).unflatten(1, (x.shape[1], 4))
        patches = self._mix(patches, inverse=False)
        if self._group_by_position:
            patches = patches.transpose(1, 2)
        return patches.flatten(1, 2)

    def _up(self, z: Tensor) -> Tensor:
        channels = z.shape[1] // 4
        if self._group_by_position:
            patches = z.unflatten(1, (4, channels)).transpose(1, 2)
        else:
            patches = z.unflatten(1, (channels, 4))
        patches = self._mix(patches, inverse=True)
        return F.pixel_shuffle(patches.flatten(1, 2), 2)

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], float]:
        (x,) = x_or_z
        if rev == self._upsampling:
            return (self._down(x),), self._log_det_down
        return (self._up(x),), self._log_det_up

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        block = type(self).__name__
        c, h, w = shape = single_input(block, input_dims, ndim=(3,))
        if self._upsampling:
            if c % 4:
                raise InvGraphError(
                    f"{block}: the channel count must be divisible by 4, received shape {shape}"
                )
            return [(c // 4, 2 * h, 2 * w)]
        if h % 2 or w % 2:
            raise InvGraphError(f"{block}: height and width must be even, received shape {shape}")
        return [(4 * c, h // 2, w // 2)]


def _hadamard4(patches: Tensor, scale: float) -> Tensor:
    """``scale * H @ p`` along dim 2 for the 4x4 Hadamard matrix H (rows: the Haar filters)."""
    a, b, c, d = patches.unbind(2)  # the patch [[a, b], [c, d]]
    top, top_diff, bottom, bottom_diff = a + b, a - b, c + d, c - d
    mixed = (top + bottom, top_diff + bottom_diff, top - bottom, top_diff - bottom_diff)
    return torch.stack(mixed, 2) * scale


class HaarDownsampling(_Squeeze):
    r"""The 2-D Haar wavelet transform, one level: :math:`(C, H, W) \to (4C, H/2, W/2)`.

    Each 2x2 patch :math:`\begin{pmatrix} a & b \\ c & d \end{pmatrix}` of a channel becomes
    its average, vertical, horizontal and diagonal wavelet coefficients

    .. math::
        \begin{pmatrix} z_a \\ z_v \\ z_h \\ z_d \end{pmatrix} = \frac{r}{2}
        \begin{pmatrix}
            1 & 1 & 1 & 1 \\ 1 & -1 & 1 & -1 \\ 1 & 1 & -1 & -1 \\ 1 & -1 & -1 & 1
        \end{pmatrix}
        \begin{pmatrix} a \\ b \\ c \\ d \end{pmatrix},
        \qquad \log|\det J| = N \log|r|,

    where :math:`r` is ``rebalance`` and :math:`N = CHW`. With :math:`r = 1` the transform
    is orthonormal and volume preserving. The inverse (:class:`HaarUpsampling`) uses the
    same matrix scaled by :math:`1 / (2r)`. Outputs, log-dets and channel order match FrEIA's.

    Arguments:
        dims_in: One image shape ``(C, H, W)`` with even ``H`` and ``W``.
        dims_c: Must be empty: the block takes no conditions.
        order_by_wavelet: Group the output channels by wavelet (``a1, a2, ..., v1, v2, ...,
            h1, h2, ..., d1, d2, ...``), so that e.g. a :class:`Split` can take the averages
            (the first quarter of the channels) apart. By default they are grouped by input
            channel (``a1, v1, h1, d1, a2, v2, ...``).
        rebalance: The factor :math:`r \neq 0` on the coefficients; values below 1 (e.g. 0.5)
            can stabilise training.

    References:
        S. Mallat, "A theory for multiresolution signal decomposition: the wavelet
        representation", IEEE TPAMI 11(7), 1989.

        L. Ardizzone, C. Lüth, J. Kruse, C. Rother, U. Köthe, "Guided Image Generation with
        Conditional Invertible Neural Networks", 2019, arXiv:1907.02392.

    Example:
        >>> import torch
        >>> from invgraph.modules import HaarDownsampling
        >>> haar = HaarDownsampling([(1, 2, 2)])
        >>> (z,), log_det = haar((torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]),))
        >>> z.flatten().tolist(), log_det
        ([5.0, -1.0, -2.0, 0.0], 0.0)
        >>> HaarDownsampling([(3, 32, 32)]).output_dims([(3, 32, 32)])
        [(12, 16, 16)]
    """

    def __init__(
        self,
        dims_in: Sequence[Sequence[int]],
        dims_c: Sequence[Sequence[int]] | None = None,
        order_by_wavelet: bool = False,
        rebalance: float = 1.0,
    ):
        super().__init__(dims_in, dims_c, order_by_wavelet)
        self.order_by_wavelet = bool(order_by_wavelet)
        self.rebalance = float(rebalance)
        if self.rebalance == 0 or not math.isfinite(self.rebalance):
            raise InvGraphError(
                f"{type(self).__name__}: rebalance must be finite and nonzero, received {rebalance}"
            )
        log_det = math.prod(self.dims_in[0]) * math.log(abs(self.rebalance))
        self._log_det_down, self._log_det_up = log_det, 0.0 - log_det  # 0.0 - x: never -0.0

    def _mix(self, patches: Tensor, inverse: bool) -> Tensor:
        # 0.5 * H is orthonormal and H is symmetric, so (r/2 H)^-1 = H / (2r).
        return _hadamard4(patches, 0.5 / self.rebalance if inverse else 0.5 * self.rebalance)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, order_by_wavelet={self.order_by_wavelet}, "
            f"rebalance={self.rebalance}"
        )


class HaarUpsampling(HaarDownsampling):
    r"""The inverse 2-D Haar wavelet transform: :math:`(4C, H, W) \to (C, 2H, 2W)`.

    Exactly the inverse of :class:`HaarDownsampling` with the same options (see there):
    :math:`\log|\det J| = -N \log|r|`. ``order_by_wavelet`` gives the order in which the
    input channels are expected.

    Arguments:
        dims_in: One shape ``(4C, H, W)``.
        dims_c: Must be empty: the block takes no conditions.
        order_by_wavelet: Whether the input channels are grouped by wavelet
            (``a1, a2, ..., v1, v2, ...``) rather than by output channel (``a1, v1, h1, d1,
            a2, ...``).
        rebalance: The factor :math:`r \neq 0` that the matching downsampling applied.

    References:
        S. Mallat, "A theory for multiresolution signal decomposition: the wavelet
        representation", IEEE TPAMI 11(7), 1989.

    Example:
        >>> import torch
        >>> from invgraph.modules import HaarUpsampling
        >>> haar = HaarUpsampling([(4, 1, 1)])
        >>> (x,), log_det = haar((torch.tensor([5.0, -1.0, -2.0, 0.0]).reshape(1, 4, 1, 1),))
        >>> x.tolist(), log_det
        ([[[[1.0, 2.0], [3.0, 4.0]]]], 0.0)
    """

    _upsampling = True


class IRevNetDownsampling(_Squeeze):
    r"""The i-RevNet / Glow squeeze: :math:`(C, H, W) \to (4C, H/2, W/2)` by moving pixels.

    Each 2x2 patch of a channel becomes 4 channels, pixels read row by row:

    .. math::
        z_{4c + 2i + j,\, y,\, x} = x_{c,\, 2y + i,\, 2x + j},
        \qquad i, j \in \{0, 1\}, \qquad \log|\det J| = 0.

    This is :func:`torch.nn.functional.pixel_unshuffle` with a factor of 2, and matches the
    channel order of FrEIA (both backends, see ``legacy_backend``).

    Arguments:
        dims_in: One image shape ``(C, H, W)`` with even ``H`` and ``W``.
        dims_c: Must be empty: the block takes no conditions.
        legacy_backend: FrEIA's name for the channel order of the original i-RevNet code:
            grouped by patch position, :math:`z_{(2i + j) C + c}` (``a1, a2, ..., b1, b2,
            ...``), instead of by input channel (``a1, b1, c1, d1, a2, ...``). Only the order
            differs; the computation is the same.

    References:
        J.-H. Jacobsen, A. Smeulders, E. Oyallon, "i-RevNet: Deep Invertible Networks",
        ICLR 2018, arXiv:1802.07088.

        D. P. Kingma, P. Dhariwal, "Glow: Generative Flow with Invertible 1x1
        Convolutions", NeurIPS 2018, arXiv:1807.03039.

    Example:
        >>> import torch
        >>> from invgraph.modules import IRevNetDownsampling
        >>> squeeze = IRevNetDownsampling([(1, 2, 2)])
        >>> (z,), log_det = squeeze((torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]),))
        >>> z.flatten().tolist(), log_det
        ([1.0, 2.0, 3.0, 4.0], 0.0)
        >>> squeeze.output_dims([(1, 2, 2)])
        [(4, 1, 1)]
    """

    def __init__(
        self,
        dims_in: Sequence[Sequence[int]],
        dims_c: Sequence[Sequence[int]] | None = None,
        legacy_backend: bool = False,
    ):
        super().__init__(dims_in, dims_c, legacy_backend)
        self.legacy_backend = bool(legacy_backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, legacy_backend={self.legacy_backend}"


class IRevNetUpsampling(IRevNetDownsampling):
    r"""The inverse i-RevNet squeeze: :math:`(4C, H, W) \to (C, 2H, 2W)` by moving pixels.

    Exactly the inverse of :class:`IRevNetDownsampling` with the same options (see there),
    i.e. :func:`torch.nn.functional.pixel_shuffle` with a factor of 2;
    :math:`\log|\det J| = 0`.

    Arguments:
        dims_in: One shape ``(4C, H, W)``.
        dims_c: Must be empty: the block takes no conditions.
        legacy_backend: Whether the input channels are grouped by patch position rather
            than by output channel (see :class:`IRevNetDownsampling`).

    References:
        J.-H. Jacobsen, A. Smeulders, E. Oyallon, "i-RevNet: Deep Invertible Networks",
        ICLR 2018, arXiv:1802.07088.

    Example:
        >>> from invgraph.modules import IRevNetUpsampling
        >>> IRevNetUpsampling([(12, 16, 16)]).output_dims([(12, 16, 16)])
        [(3, 32, 32)]
    """

    _upsampling = True
