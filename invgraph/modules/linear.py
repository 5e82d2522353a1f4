"""Linear blocks: fixed matrices, Glow's learned 1x1 convolution, and orthogonal maps.

Every block here multiplies each sample by an invertible matrix (plus, for some, a bias and a
scaling), so its log-det does not depend on the input: it is returned as a 0-dim tensor (or
``0.0`` for the orthogonal permutations). Inverses are exact given the parameters: a fixed
matrix's inverse is derived from it in float64, a learned one is inverted at every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..compat import drop_householder_matrix
from ..errors import InvGraphError
from .base import (
    InvertibleModule,
    LogDet,
    Shape,
    full_precision,
    mix_channels,
    single_input,
)
from .clamping import atan_clamp

__all__ = [
    "Fixed1x1Conv",
    "FixedLinearTransform",
    "HouseholderPerm",
    "InvertibleConv1x1",
    "OrthogonalTransform",
    "householder_reflect",
    "random_orthogonal",
]

Dims = Sequence[Sequence[int]]


def _pixels(x: Tensor) -> int:
    """The number of positions a channel-mixing matrix is applied at: ``H * W`` for images."""
    return math.prod(x.shape[2:])


def _positive_diagonal(q: Tensor, r: Tensor) -> Tensor:
    """``Q`` of ``A = Q R`` with each column's sign flipped where ``R``'s diagonal is negative:
    the QR decomposition with :math:`R_{ii} > 0`, which is unique (Gram-Schmidt's)."""
    diagonal = r.diagonal()
    return q * torch.copysign(torch.ones_like(diagonal), diagonal)


def random_orthogonal(
    n: int,
    *,
    haar: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""A random orthogonal ``(n, n)`` matrix: :math:`Q` of the QR decomposition of a
    standard normal matrix :math:`A = QR`.

    Draws one ``torch.randn(n, n)`` from torch's global generator, in ``dtype`` on
    ``device`` (torch's defaults, e.g. an enclosing ``with torch.device(...)``, if
    ``None``), so seeded results depend only on the seed, ``dtype`` and ``device``. With
    ``haar``, the signs of the columns are fixed so that :math:`R_{ii} > 0`, which makes
    :math:`Q` uniform (Haar) on :math:`O(n)`, and the first column is negated where
    :math:`\det Q = -1`: uniform on :math:`SO(n)`, a rotation. Without, :math:`Q` is LAPACK's,
    whose determinant may be :math:`\pm 1` (what Glow's 1x1 convolution starts from).

    References:
        F. Mezzadri, "How to generate random matrices from the classical compact groups",
        Notices of the AMS 54(5), 2007, arXiv:math-ph/0609050.

    Example:
        >>> import torch
        >>> q = random_orthogonal(4, haar=True, dtype=torch.float64)
        >>> torch.allclose(q @ q.T, torch.eye(4, dtype=torch.float64)), round(float(q.det()), 6)
        (True, 1.0)
    """
    q, r = torch.linalg.qr(torch.randn(n, n, dtype=dtype, device=device))
    if not haar:
        return q
    q = _positive_diagonal(q, r)
    q[:, 0] *= torch.linalg.det(q).sign()  # det +1
    return q


def householder_reflect(x: Tensor, v: Tensor) -> Tensor:
    r"""The Householder reflection :math:`H x = x - 2 rac{v^T x}{v^T v} v` of each row of ``x``.

    Rows are along the last dimension; ``v`` is one vector ``(d,)`` for all rows, or one per
    row (broadcast like ``x``). :math:`H = I - 2 v v^T / v^T v` is symmetric and orthogonal,
    so a matrix :math:`W` reflected row by row is :math:`W H`.

    Example:
        >>> import torch
        >>> householder_reflect(torch.tensor([[1.0, 2.0]]), torch.tensor([1.0, 0.0]))
        tensor([[-1.,  2.]])
    """
    return x - v * (2.0 * (x * v).sum(-1, keepdim=True) / (v * v).sum(-1, keepdim=True))


class _FixedMatrix(InvertibleModule):
    """The buffers of a fixed invertible matrix, under FrEIA's names, and the shared forward.

    ``M`` holds :math:`M^T` (FrEIA's layout); ``M_inv`` (its inverse) and ``logDetM`` are
    derived from ``M`` in float64 at construction, after every ``.to()``/``.double()`` and
    after ``load_state_dict``, so they are exact in the working dtype whatever a checkpoint
    stored for them. Subclasses implement ``_transform(x, rev)``.
    """

    M: Tensor
    M_inv: Tensor
    logDetM: Tensor

    def __init__(self, dims_in: Dims, dims_c: Dims | None, M: Tensor | None, vector: bool):
        super().__init__(dims_in, dims_c)
        name, self._vector = type(self).__name__, vector
        d = self.output_dims(self.dims_in)[0][0]
        if M is None:
            raise InvGraphError(f"{name}: needs M, an invertible ({d}, {d}) matrix")
        M = torch.as_tensor(M).detach()
        if tuple(M.shape) != (d, d):
            raise InvGraphError(
                f"{name}: M must be ({d}, {d}) for input shape {self.dims_in[0]}, "
                f"received {tuple(M.shape)}"
            )
        M = M if M.is_floating_point() else M.to(torch.get_default_dtype())
        if M.device.type != "meta" and torch.linalg.inv_ex(M.double())[1] != 0:
            raise InvGraphError(f"{name}: M is singular, it must be invertible")
        kernel = (d, d) if vector else (d, d, 1, 1)  # FrEIA's shapes, so its checkpoints load
        self.register_buffer("M", M.t().reshape(kernel).clone())
        self.register_buffer("M_inv", torch.empty_like(self.M))
        self.register_buffer("logDetM", self.M.new_zeros(()))
        self._derive()
        self.register_load_state_dict_post_hook(_derive_after_load)

    def _derive(self) -> None:
        """Recompute ``M_inv`` and ``logDetM`` from ``M``, in float64."""
        with torch.no_grad():
            matrix = self.M.reshape(self.M.shape[:2]).double()
            self.M_inv.copy_(torch.linalg.inv_ex(matrix)[0].reshape(self.M.shape))
            self.logDetM.copy_(torch.linalg.slogdet(matrix)[1])

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> _FixedMatrix:
        super()._apply(fn, recurse)
        self._derive()  # e.g. after .double(): an inverse rounded to float32 would not do
        return self

    def _transform(self, x: Tensor, rev: bool) -> Tensor:
        raise NotImplementedError

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], Tensor]:
        (x,) = x_or_z
        log_det = self.logDetM * (-_pixels(x) if rev else _pixels(x))
        with full_precision(x):  # in the data's dtype, also under autocast
            return (self._transform(x, rev),), log_det

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        return [single_input(type(self).__name__, input_dims, (1,) if self._vector else None)]


def _derive_after_load(module: _FixedMatrix, incompatible_keys: object) -> None:
    module._derive()


class FixedLinearTransform(_FixedMatrix):
    r"""A fixed affine map of vectors: :math:`z = M x + b`, :math:`\log|\det J| = \log|\det M|`.

    :math:`M` and :math:`b` are given and never trained. The buffers are FrEIA's: ``M``
    (holding :math:`M^T`), ``M_inv`` (:math:`(M^T)^{-1}`), ``logDetM`` and ``b`` (shape
    ``(1, d)``, absent without ``b``), so FrEIA checkpoints load. ``M_inv`` and ``logDetM``
    are recomputed from ``M`` in float64 whenever the dtype or the state changes, so the
    inverse is exact in float64 even when ``M`` was given in float32.

    Arguments:
        dims_in: One input shape ``(d,)``.
        dims_c: Condition shapes (unused).
        M: The invertible ``(d, d)`` matrix.
        b: An optional offset of shape ``(d,)``.

    Example:
        >>> import torch
        >>> from invgraph.modules.linear import FixedLinearTransform
        >>> M, b = torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([1.0, -1.0])
        >>> block = FixedLinearTransform([(2,)], M=M, b=b)
        >>> (z,), log_det = block((torch.tensor([[1.0, 1.0]]),))
        >>> z, round(float(log_det), 4)  # M @ [1, 1] + b; log 6
        (tensor([[4., 2.]]), 1.7918)
        >>> block((z,), rev=True)[0][0]
        tensor([[1., 1.]])
    """

    b: Tensor | None

    def __init__(
        self,
        dims_in: Dims,
        dims_c: Dims | None = None,
        M: Tensor | None = None,
        b: Tensor | None = None,
    ):
        super().__init__(dims_in, dims_c, M, vector=True)
        if b is not None:
            b = torch.as_tensor(b).detach()
            if tuple(b.shape) != self.dims_in[0]:
                raise InvGraphError(
                    f"FixedLinearTransform: b must have shape {self.dims_in[0]}, "
                    f"received {tuple(b.shape)}"
                )
            b = b.to(self.M).reshape(1, -1).clone()
        self.register_buffer("b", b)

    def _transform(self, x: Tensor, rev: bool) -> Tensor:
        if rev:
            return (x if self.b is None else x - self.b) @ self.M_inv.to(x.dtype)
        z = x @ self.M.to(x.dtype)
        return z if self.b is None else z + self.b


class Fixed1x1Conv(_FixedMatrix):
    r"""A fixed channel-mixing 1x1 convolution: :math:`z_{:, h, w} = M^T x_{:, h, w}`.

    :math:`\log|\det J| = H W \log|\det M|`. As in FrEIA 0.2 (kept for parity), the kernel
    is :math:`M^T`: each pixel's channel vector is multiplied by :math:`M^T`, unlike
    :class:`FixedLinearTransform`, which multiplies by :math:`M`; pass ``M.T`` for
    :math:`z = M x`. Buffers as FrEIA: ``M`` (the kernel :math:`M^T`, shape ``(C, C, 1, 1)``),
    ``M_inv`` and ``logDetM``, the latter two kept exact as in
    :class:`FixedLinearTransform`. Besides images ``(C, H, W)`` it accepts any
    ``(C, *spatial)`` input (FrEIA: images only).

    Arguments:
        dims_in: One input shape ``(C, H, W)`` (or ``(C, *spatial)``).
        dims_c: Condition shapes (unused).
        M: The invertible ``(C, C)`` matrix.

    Example:
        >>> import torch
        >>> from invgraph.modules.linear import Fixed1x1Conv
        >>> block = Fixed1x1Conv([(2, 3, 3)], M=torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
        >>> x = torch.ones(1, 2, 3, 3)
        >>> (z,), log_det = block((x,))
        >>> z[0, :, 0, 0], float(log_det)  # M.T @ [1, 1]; 9 pixels x log 1
        (tensor([1., 3.]), 0.0)
        >>> torch.allclose(block((z,), rev=True)[0][0], x)
        True
    """

    def __init__(self, dims_in: Dims, dims_c: Dims | None = None, M: Tensor | None = None):
        super().__init__(dims_in, dims_c, M, vector=False)

    def _transform(self, x: Tensor, rev: bool) -> Tensor:
        kernel = self.M_inv if rev else self.M
        return mix_channels(x, kernel[:, :, 0, 0])


class InvertibleConv1x1(InvertibleModule):
    r"""Glow's learned invertible 1x1 convolution: :math:`z_{:, h, w} = W x_{:, h, w}`.

    With ``LU_decomposed=True`` (the default), :math:`W = P L (U + \mathrm{diag}(\mathrm{sign}
    (s) \, e^{\log|s|}))` with :math:`P` a fixed permutation (buffer ``p``), :math:`L` unit
    lower triangular (parameter ``lower``, strict lower part used), :math:`U` strictly upper
    triangular (``upper``), the fixed signs ``sign_s`` and the learned ``log_s``:
    :math:`\log|\det J| = H W \sum \log|s|`, and the inverse
    :math:`W^{-1} = (U + \mathrm{diag}(s))^{-1} L^{-1} P^T` comes from two triangular solves.
    With ``LU_decomposed=False``, ``weight`` is :math:`W` itself, the log-det comes from
    ``slogdet`` and the inverse from ``inv``. Either way the inverse is recomputed from the
    parameters at each call, so it is exact after any amount of training. :math:`W` starts
    as a random orthogonal matrix (log-det 0). The names are those of the common PyTorch
    ports of Glow, whose checkpoints therefore load.

    It mixes dimension 1 of any ``(C, *spatial)`` input at every position; a vector
    ``(C,)`` is a 1x1 image (:math:`H = W = 1`), so the block is then a learned invertible
    linear map. The number of positions is read from the input, so one block serves any
    image size. FrEIA 0.2 has no such block (its issue #50).

    Arguments:
        dims_in: One input shape ``(C, H, W)``, ``(C,)`` or any ``(C, *spatial)``.
        dims_c: Condition shapes (unused).
        LU_decomposed: Parameterise :math:`W` by its LU decomposition (cheap log-det and
            inverse, :math:`O(C)` instead of :math:`O(C^3)`), else learn :math:`W` directly.

    References:
        Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        NeurIPS 2018, arXiv:1807.03039.

    Example:
        >>> import torch
        >>> from invgraph.modules.linear import InvertibleConv1x1
        >>> block = InvertibleConv1x1([(4, 8, 8)])
        >>> x = torch.randn(2, 4, 8, 8)
        >>> (z,), log_det = block((x,))
        >>> z.shape, abs(log_det.item()) < 1e-4  # a rotation at initialisation
        (torch.Size([2, 4, 8, 8]), True)
        >>> torch.allclose(block((z,), rev=True)[0][0], x, atol=1e-5)
        True
    """

    p: Tensor
    sign_s: Tensor

    def __init__(self, dims_in: Dims, dims_c: Dims | None = None, LU_decomposed: bool = True):
        super().__init__(dims_in, dims_c)
        channels = self.output_dims(self.dims_in)[0][0]
        self.LU_decomposed = bool(LU_decomposed)
        rotation = random_orthogonal(channels)
        if not self.LU_decomposed:
            self.weight = nn.Parameter(rotation)
            return
        p, lower, upper = torch.linalg.lu(rotation)
        s = upper.diagonal()
        self.register_buffer("p", p)
        self.register_buffer("sign_s", s.sign())
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(upper.triu(1))
        self.log_s = nn.Parameter(s.abs().log())

    def _matrix(self, rev: bool) -> Tensor:
        """:math:`W` (or :math:`W^{-1}` if ``rev``) from the parameters."""
        if not self.LU_decomposed:
            return torch.linalg.inv(self.weight) if rev else self.weight
        lower = self.lower.tril(-1) + torch.diag(torch.ones_like(self.log_s))
        upper = self.upper.triu(1) + torch.diag(self.sign_s * self.log_s.exp())
        if not rev:
            return self.p @ lower @ upper
        solve = torch.linalg.solve_triangular
        return solve(upper, solve(lower, self.p.t(), upper=False, unitriangular=True), upper=True)

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], LogDet]:
        (x,) = x_or_z
        log_det = None
        if jac:
            log_abs_det = (
                self.log_s.sum() if self.LU_decomposed else torch.linalg.slogdet(self.weight)[1]
            )
            log_det = log_abs_det * (-_pixels(x) if rev else _pixels(x))
        with full_precision(x):  # W and its inverse in the data's dtype, also under autocast
            return (mix_channels(x, self._matrix(rev)),), log_det

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        return [single_input("InvertibleConv1x1", input_dims)]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, LU_decomposed={self.LU_decomposed}"


class HouseholderPerm(InvertibleModule):
    r"""A product of Householder reflections, a learned orthogonal mixing of vectors.

    .. math:: z = H_n \cdots H_2 H_1 x, \qquad H_k = I - 2 \frac{v_k v_k^T}{v_k^T v_k},
        \qquad \log|\det J| = 0.

    The product is orthogonal for any non-zero :math:`v_k`, so the inverse
    :math:`x = H_1 \cdots H_n z` is exact. The vectors are the rows of ``Vs`` (shape
    ``(n_reflections, d)``, FrEIA's name and layout): a parameter (initialised near the
    first unit vectors), or with ``fixed=True`` a random buffer. The reflections are
    applied one by one, :math:`O(n d)` per sample, never assembled into a matrix.

    Conditional mode (``dims_c`` given), as FrEIA 0.2 documents it: the condition holds the
    vectors, per sample, as a ``(d, n_reflections)`` array (column :math:`k` is
    :math:`v_k`; any shape of ``d * n_reflections`` elements is read so), and the block has
    no parameters; gradients flow into the condition, e.g. into a network predicting it.
    FrEIA 0.2 crashes there and rejects its own default ``n_reflections=1`` (its defects 7);
    both work here.

    Arguments:
        dims_in: One input shape ``(d,)``.
        dims_c: Nothing, or one condition shape of ``d * n_reflections`` elements.
        n_reflections: The number :math:`n \ge 1` of reflections.
        fixed: Draw the vectors at random once and never train them (not conditional).

    References:
        Tomczak and Welling, "Improving Variational Auto-Encoders using Householder Flow",
        arXiv:1611.09630. Mathiesen, Ehrhardt and Vollmer, "Fast and Flexible Householder
        Products for Invertible Networks", ICML 2020 INNF+ workshop.

    Example:
        >>> import torch
        >>> from invgraph.modules.linear import HouseholderPerm
        >>> block = HouseholderPerm([(5,)], n_reflections=2)
        >>> x = torch.randn(3, 5)
        >>> (z,), log_det = block((x,))
        >>> torch.allclose(z.norm(dim=1), x.norm(dim=1)), log_det
        (True, 0.0)
        >>> torch.allclose(block((z,), rev=True)[0][0], x, atol=1e-6)
        True
    """

    def __init__(
        self,
        dims_in: Dims,
        dims_c: Dims | None = None,
        n_reflections: int = 1,
        fixed: bool = False,
    ):
        super().__init__(dims_in, dims_c)
        (self.width,) = self.output_dims(self.dims_in)[0]
        self.n_reflections, self.fixed = int(n_reflections), bool(fixed)
        self.conditional = bool(self.dims_c)
        if self.n_reflections < 1:
            raise InvGraphError(f"HouseholderPerm: n_reflections must be >= 1, got {n_reflections}")
        if self.conditional:
            expected = self.width * self.n_reflections
            if self.fixed:
                raise InvGraphError("HouseholderPerm: cannot be fixed and conditional at once")
            if len(self.dims_c) != 1 or math.prod(self.dims_c[0]) != expected:
                raise InvGraphError(
                    f"HouseholderPerm: expects one condition of {self.width} x "
                    f"{self.n_reflections} = {expected} elements (input {self.dims_in[0]}, "
                    f"n_reflections={self.n_reflections}), received shapes {self.dims_c}"
                )
        elif self.fixed:
            self.register_buffer("Vs", torch.randn(self.n_reflections, self.width))
        else:
            near_identity = torch.eye(self.n_reflections, self.width)
            self.Vs = nn.Parameter(near_identity + 0.1 * torch.randn_like(near_identity))

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        if self.fixed:  # a FrEIA checkpoint also holds the reflections' product
            drop_householder_matrix(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], float]:
        (x,) = x_or_z
        if self.conditional:  # (B, d, n) -> n vectors of shape (B, d)
            vectors = c[0].reshape(-1, self.width, self.n_reflections).movedim(-1, 0)
        else:
            vectors = self.Vs
        order = range(self.n_reflections - 1, -1, -1) if rev else range(self.n_reflections)
        for k in order:
            x = householder_reflect(x, vectors[k])
        return (x,), 0.0

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        return [single_input("HouseholderPerm", input_dims, ndim=(1,))]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_reflections={self.n_reflections}, fixed={self.fixed}"


def _orthonormal_rows(weights: Tensor) -> Tensor:
    """Gram-Schmidt on the rows of a square matrix, via QR: ``weights`` itself if orthogonal.

    With ``weights.T = Q R`` and ``diag(R) > 0``, the rows of ``Q.T`` are the rows of
    ``weights`` orthonormalised in order (what FrEIA's periodic correction computes).
    """
    return _positive_diagonal(*torch.linalg.qr(weights.t())).t()


class OrthogonalTransform(InvertibleModule):
    r"""A learned rotation, bias and scaling: :math:`z = e^{\psi(s)} \odot (R x + b)`.

    :math:`\psi(s) = \alpha \cdot 0.636 \arctan(s / \alpha)` (:math:`\alpha` = ``clamp``)
    bounds the log-scales to :math:`(-\alpha, \alpha)`;
    :math:`\log|\det J| = \sum_i \psi(s_i)`. Parameters as FrEIA: ``weights``
    (:math:`d \times d`), ``bias`` and ``scaling`` (:math:`1 \times d`). :math:`R^T` is the
    Gram-Schmidt orthonormalisation of the rows of ``weights``, computed at every call: it
    is orthogonal by construction, so the inverse :math:`x = R^T (e^{-\psi(s)} \odot z - b)`
    is exact after any amount of training, and gradients flow through the
    orthonormalisation.

    FrEIA 0.2 uses ``weights`` as they are and only re-orthonormalises them every
    ``correction_interval`` backward passes, inverting by the transpose in between, which
    drifts (its defect 11). On orthogonal ``weights`` the two blocks agree; otherwise this
    block computes what FrEIA would after its next correction. ``correction_interval`` is
    accepted for compatibility and unused.

    Arguments:
        dims_in: One input shape ``(d,)``.
        dims_c: Condition shapes (unused).
        correction_interval: Unused (FrEIA's projection period; there is no drift here).
        clamp: :math:`\alpha`, the bound of the log-scales.

    Example:
        >>> import torch
        >>> from invgraph.modules.linear import OrthogonalTransform
        >>> block = OrthogonalTransform([(4,)])
        >>> x = torch.randn(3, 4)
        >>> (z,), log_det = block((x,))
        >>> torch.allclose(block((z,), rev=True)[0][0], x, atol=1e-5), log_det.shape
        (True, torch.Size([]))
    """

    def __init__(
        self,
        dims_in: Dims,
        dims_c: Dims | None = None,
        correction_interval: int = 256,
        clamp: float = 5.0,
    ):
        super().__init__(dims_in, dims_c)
        (width,) = self.output_dims(self.dims_in)[0]
        self.correction_interval, self.clamp = correction_interval, float(clamp)
        self.weights = nn.Parameter(random_orthogonal(width))
        self.bias = nn.Parameter(0.05 * torch.randn(1, width))
        self.scaling = nn.Parameter(0.02 * torch.randn(1, width))

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], LogDet]:
        (x,) = x_or_z
        log_scale = self.clamp * atan_clamp(self.scaling / self.clamp)
        log_det = (-log_scale.sum() if rev else log_scale.sum()) if jac else None
        with full_precision(x):  # in the data's dtype, also under autocast
            rotation = _orthonormal_rows(self.weights).to(x.dtype)
            if rev:
                return ((x * torch.exp(-log_scale) - self.bias) @ rotation.t(),), log_det
            return ((x @ rotation + self.bias) * torch.exp(log_scale),), log_det

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        return [single_input("OrthogonalTransform", input_dims, ndim=(1,))]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, clamp={self.clamp}"
