"""Element-wise blocks: maps that act on each value, or each channel, on its own.

Each block here has a diagonal Jacobian, so its log-det is a sum of log-slopes. Fixed:
:class:`InvertibleSigmoid`. Learned: :class:`LearnedElementwiseScaling` (one scale per
value), :class:`ActNorm` (one affine map per channel, initialised from data), and the
leaky-ReLU-like :class:`InvAutoAct`, :class:`InvAutoActTwoSided` and
:class:`InvAutoActFixed` (one slope per channel and side of zero).

Not provided:
    FrEIA's ``InvAutoFC`` and ``InvAutoConv2D`` (the "invertible autoencoder" layers of
    arXiv:1802.06869) are left out, because they are not invertible. Their inverse applies
    the *transpose* of the forward weight (a transposed convolution for ``InvAutoConv2D``),
    which undoes the forward pass only while the weight is orthogonal; nothing keeps it so,
    and the round trip drifts as soon as the weight trains (FrEIA 0.2: an error of 0.037
    after 20 SGD steps). They also report a log-det of 0 whatever the weight, and allow
    ``dims_out != dims_in``, which no bijection can have. Every invgraph block is exactly
    invertible with an exact log-det. Use instead, in ``invgraph.modules``:
    ``InvertibleConv1x1`` (a learned 1x1 convolution with an exact inverse and log-det)
    for images and ``OrthogonalTransform`` (a learned orthogonal matrix) for vectors,
    followed by one of the activations below for a non-linearity.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..compat import infer_actnorm_initialised
from ..errors import InvGraphError
from .base import InvertibleModule, Shape, single_input, sum_except_batch

__all__ = [
    "ActNorm",
    "InvAutoAct",
    "InvAutoActFixed",
    "InvAutoActTwoSided",
    "InvertibleSigmoid",
    "LearnedElementwiseScaling",
]

Dims = Sequence[Sequence[int]]


def _log_of_positive(block: str, name: str, value: float) -> float:
    """``log(value)``, or an error when ``value`` is not a positive number."""
    if not value > 0:
        raise InvGraphError(f"{block}: {name} must be > 0, received {value!r}")
    return math.log(value)


def _constant_log_det(value: Tensor, x: Tensor, rev: bool) -> Tensor:
    """A log-det that depends on the parameters only, as a fresh ``(B,)`` tensor like ``x``."""
    return x.new_zeros(x.shape[0]) + (-value if rev else value)


def _all_reduce(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over all processes (in place) when torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


class _ElementwiseBlock(InvertibleModule):
    """One input of at least one dimension; outputs of the same shape; no conditions."""

    takes_conditions = False

    def __init__(self, dims_in: Dims, dims_c: Dims | None = None):
        super().__init__(dims_in, dims_c)
        self.output_dims(self.dims_in)

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        return [single_input(type(self).__name__, input_dims)]

    def _per_channel(self, value: float, name: str, learnable: bool = True) -> None:
        """Register ``name``: ``value`` per channel, shaped ``(1, C, 1, ..., 1)`` to broadcast.

        A parameter when ``learnable``, else a buffer (in the state dict under the same name).
        """
        channels, *rest = self.dims_in[0]
        tensor = torch.full((1, channels, *[1] * len(rest)), float(value))
        if learnable:
            self.register_parameter(name, nn.Parameter(tensor))
        else:
            self.register_buffer(name, tensor)


class InvertibleSigmoid(_ElementwiseBlock):
    r"""The logistic sigmoid, element-wise: :math:`z = \sigma(x) = 1 / (1 + e^{-x})`.

    .. math::

        x = \log z - \log(1 - z), \qquad
        \log|\det J| = \sum_i \log \sigma(x_i) + \log \sigma(-x_i),

    since :math:`\sigma' = \sigma(x)\,\sigma(-x)`. The log-det is computed with log-sigmoids
    forward and with :math:`\log z + \log(1 - z)` in reverse, so it stays finite where
    FrEIA's overflows to ``-inf`` (:math:`|x| > 88` in float32). It is a ``(B,)`` tensor for
    inputs of any rank (FrEIA 0.2 summed dimension 1 only: ``(B, H, W)`` for images), and
    ``jac=False`` returns ``(outputs, None)`` (FrEIA: a 1-tuple).

    The inverse needs :math:`0 < z < 1` (``z`` outside gives NaN, 0 and 1 give infinities).
    :math:`\sigma(x)` rounds to 1 for :math:`x > 16.6` in float32 (36.7 in float64), so such
    inputs do not come back.

    Arguments:
        dims_in: One input shape.
        dims_c: Must be empty: the block takes no conditions.

    References:
        L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP (2017),
        section 4.1, the logit transform. arXiv:1605.08803.

    Example:
        >>> import torch
        >>> from invgraph.modules import InvertibleSigmoid
        >>> sigmoid = InvertibleSigmoid([(2, 3, 3)])
        >>> (z,), log_det = sigmoid((torch.zeros(4, 2, 3, 3),))
        >>> z[0, 0, 0, 0].item(), log_det.shape, round(log_det[0].item(), 4)  # 18 log(1/4)
        (0.5, torch.Size([4]), -24.9533)
        >>> (x,), _ = sigmoid((z,), rev=True)
        >>> x.abs().max().item()
        0.0
    """

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], Tensor | None]:
        (value,) = x_or_z
        if rev:
            log_z, log_one_minus_z = torch.log(value), torch.log1p(-value)
            log_det = -sum_except_batch(log_z + log_one_minus_z) if jac else None
            return (log_z - log_one_minus_z,), log_det
        x = value
        log_det = sum_except_batch(F.logsigmoid(x) + F.logsigmoid(-x)) if jac else None
        return (torch.sigmoid(x),), log_det


class LearnedElementwiseScaling(_ElementwiseBlock):
    r"""A learned positive scale for every value: :math:`z = x \odot e^{s}`.

    .. math::

        x = z \odot e^{-s}, \qquad \log|\det J| = \sum_i s_i.

    The log-scales ``s`` (a parameter of shape ``(1, *dims_in[0])``, FrEIA's name) have one
    entry per value, not per channel. Unlike FrEIA 0.2, the inverse's log-det is
    :math:`-\sum s` (FrEIA: :math:`+\sum s`), ``init_scale`` is applied (FrEIA multiplies
    its log by zeros, so every scale starts at 1), and the log-det is ``(B,)`` (FrEIA:
    ``(1,)``).

    Arguments:
        dims_in: One input shape.
        dims_c: Must be empty: the block takes no conditions.
        init_scale: The initial scale :math:`e^{s}`, the same for every value; > 0.

    References:
        L. Dinh, D. Krueger, Y. Bengio. NICE: Non-linear Independent Components Estimation
        (2014), section 3.3, the diagonal scaling layer. arXiv:1410.8516.

    Example:
        >>> import torch
        >>> from invgraph.modules import LearnedElementwiseScaling
        >>> scaling = LearnedElementwiseScaling([(3,)], init_scale=2.0)
        >>> (z,), log_det = scaling((torch.ones(2, 3),))
        >>> z.tolist(), round(log_det[0].item(), 4)  # 3 log 2
        ([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]], 2.0794)
        >>> (x,), log_det = scaling((z,), rev=True)
        >>> x.tolist(), round(log_det[0].item(), 4)
        ([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], -2.0794)
    """

    def __init__(self, dims_in: Dims, dims_c: Dims | None = None, init_scale: float = 1.0):
        super().__init__(dims_in, dims_c)
        s = _log_of_positive("LearnedElementwiseScaling", "init_scale", init_scale)
        self.s = nn.Parameter(torch.full((1, *self.dims_in[0]), s))

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], Tensor | None]:
        (x,) = x_or_z
        log_det = _constant_log_det(self.s.sum(), x, rev) if jac else None
        return (x * torch.exp(-self.s if rev else self.s),), log_det


class ActNorm(_ElementwiseBlock):
    r"""Activation normalisation: an affine map per channel, initialised from the data.

    .. math::

        z = x \odot e^{s} + b, \qquad x = (z - b) \odot e^{-s}, \qquad
        \log|\det J| = n \sum_c s_c,

    with ``scale`` :math:`s` and ``bias`` :math:`b` parameters of shape ``(1, C, 1, ...)``
    (FrEIA 0.2's names and meaning) and :math:`n` the number of values per channel
    (:math:`HW` for images, 1 for vectors).

    **Initialisation.** The first forward batch (or ``init_data``, or :meth:`initialize`)
    sets, from each channel's mean :math:`\mu` and standard deviation :math:`\sigma`
    (population, over the batch and the spatial positions),

    .. math::

        s = -\log(\sigma + \epsilon), \qquad b = -\mu\, e^{s},

    so that these outputs have mean 0 and variance :math:`\sigma^2 / (\sigma + \epsilon)^2
    \approx 1` per channel; then they train as ordinary parameters. The :math:`\epsilon` of
    Glow (``eps``, default ``1e-6``, in the data's units) bounds the scale by
    :math:`1/\epsilon`: without it, a near-constant channel (a spread of rounding noise,
    :math:`\sigma \approx 10^{-7}`) would get a scale of :math:`10^{7}` and send the next
    batch's values to :math:`10^{7}`. A channel with :math:`\sigma = 0` exactly (constant,
    or one vector in the batch) carries no spread to normalise and is only centred
    (:math:`s = 0`). The statistics are computed in float32, or in the input's dtype if
    wider, then stored in the parameters' dtype. When :mod:`torch.distributed` is
    initialised, the counts, sums and squared deviations are summed over all processes (so
    every process must run its first forward, a collective): every rank gets the
    statistics of all ranks' batches.

    **Refused data.** A batch holding NaN or infinite values raises
    :class:`~invgraph.errors.InvGraphError` (its shape and how many values are not finite,
    summed over all processes), as do statistics that overflow: one NaN would otherwise
    make every parameter NaN for good, silently. This check reads the statistics on the
    host: one synchronisation, once, on the initialising call only; the forward and inverse
    of an initialised block never synchronise. It is skipped where no value can be read:
    on the ``meta`` device and while :func:`torch.compile` traces the first call
    (initialise eagerly first, with one batch or :meth:`initialize`, to keep it). An empty
    first batch initialises nothing: the outputs are empty and the next batch initialises.

    **Threads.** The first call initialises under a lock held by the block: threads that
    make their first call together initialise it once, and none runs with half-written
    parameters. An initialised block reads only the Python flag, never the lock, so it
    compiles without graph breaks; the lock is not pickled (a copy, saved with
    ``torch.save`` or deep-copied, gets a new one).

    **State.** Whether the block is initialised is kept twice: in the bool buffer
    ``is_initialized`` (saved in the state dict) and in the Python attribute
    ``initialized``, which is what :meth:`forward` reads, so that the check needs no host
    synchronisation and :func:`torch.compile` guards on it (one recompilation after the
    initialisation) instead of breaking the graph. Loading a state dict sets the attribute
    from the buffer; a FrEIA 0.2 state dict (``scale`` and ``bias`` only) counts as
    initialised, as in FrEIA. FrEIA's ``init_on_next_batch`` is a settable alias of
    ``not initialized``.

    **Inverse first.** Calling the inverse before initialisation raises
    :class:`~invgraph.errors.InvGraphError`: the statistics are those of :math:`x`, which
    a batch of :math:`z` does not give, and parameters made up from :math:`z` would never
    be replaced by the real initialisation. Initialise or load a state dict first.

    Arguments:
        dims_in: One input shape ``(C, ...)``.
        dims_c: Must be empty: the block takes no conditions.
        init_data: A batch ``(B, C, ...)`` to initialise from now, instead of the first
            forward batch.
        eps: :math:`\epsilon \ge 0`, added to each channel's standard deviation.

    References:
        D. P. Kingma, P. Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions
        (2018), section 3.1. arXiv:1807.03039.

    Example:
        >>> import torch
        >>> from invgraph.modules import ActNorm
        >>> actnorm = ActNorm([(2, 4, 4)])
        >>> x = 3.0 + 5.0 * torch.randn(16, 2, 4, 4)
        >>> (z,), log_det = actnorm((x,))  # the first batch initialises
        >>> actnorm.initialized, bool(actnorm.is_initialized), log_det.shape
        (True, True, torch.Size([16]))
        >>> z.mean(dim=(0, 2, 3)).abs().max().item() < 1e-5
        True
        >>> z.var(dim=(0, 2, 3), unbiased=False).sub(1).abs().max().item() < 1e-5
        True
        >>> (x_back,), _ = actnorm((z,), rev=True)
        >>> torch.allclose(x_back, x, atol=1e-5)
        True
    """

    scale: Tensor
    bias: Tensor
    is_initialized: Tensor

    def __init__(
        self,
        dims_in: Dims,
        dims_c: Dims | None = None,
        init_data: Tensor | None = None,
        eps: float = 1e-6,
    ):
        super().__init__(dims_in, dims_c)
        if not (math.isfinite(eps) and eps >= 0):
            raise InvGraphError(f"ActNorm: eps must be a finite number >= 0, received {eps!r}")
        self.eps = float(eps)
        self._per_channel(0.0, "scale")
        self._per_channel(0.0, "bias")
        self.register_buffer("is_initialized", torch.tensor(False))
        self.initialized = False
        self._init_lock = threading.Lock()
        self._values_per_channel = math.prod(self.dims_in[0][1:])
        if init_data is not None:
            self.initialize(init_data)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_init_lock", None)  # a lock cannot be pickled; a copy gets its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._init_lock = threading.Lock()
        self.__dict__.setdefault("eps", 1e-6)  # pickled before eps existed

    @property
    def init_on_next_batch(self) -> bool:
        """FrEIA 0.2's name: ``True`` while the next forward batch will initialise."""
        return not self.initialized

    @init_on_next_batch.setter
    def init_on_next_batch(self, value: bool) -> None:
        self.initialized = not value
        self.is_initialized.fill_(not value)

    def initialize(self, x: Tensor) -> None:
        """Set ``scale`` and ``bias`` so that the batch ``x`` maps to mean 0, variance 1.

        Raises :class:`~invgraph.errors.InvGraphError` for a batch of the wrong shape, an
        empty one, or one with non-finite values (see the class).
        """
        if tuple(x.shape[1:]) != self.dims_in[0]:
            raise InvGraphError(
                f"ActNorm: initialisation expects a batch of shape (B, *{self.dims_in[0]}), "
                f"received {tuple(x.shape)}"
            )
        with self._init_lock:
            if not self._initialize(x, check=not x.is_meta):
                raise InvGraphError(
                    f"ActNorm: cannot initialise from an empty batch of shape {tuple(x.shape)}"
                )

    def _initialize_on_first_call(self, x: Tensor) -> None:
        """Initialise from the first forward batch, once, also when threads race to it."""
        if torch.compiler.is_compiling():  # traced: no lock and no host sync to trace
            self._initialize(x, check=False)
            return
        with self._init_lock:
            if not self.initialized:  # else another thread initialised while we waited
                self._initialize(x, check=not x.is_meta)

    @torch.no_grad()
    def _initialize(self, x: Tensor, check: bool) -> bool:
        """Set ``scale`` and ``bias`` from the statistics of ``x``; return whether it did.

        With ``check``, non-finite data and statistics raise, and an empty batch (over all
        processes) initialises nothing, at the cost of one host synchronisation.
        """
        distributed = dist.is_available() and dist.is_initialized()
        if len(x) == 0 and not distributed:
            return False
        dtype = torch.promote_types(x.dtype, torch.float32)
        values = x.detach().to(dtype).transpose(0, 1).flatten(1)  # (C, n)
        nonfinite = (~torch.isfinite(values)).sum().to(dtype).reshape(1)
        counts = torch.cat([values.new_full((1,), values.shape[1]), nonfinite, values.sum(1)])
        count, nonfinite, sums = _all_reduce(counts).split([1, 1, len(values)])
        mean = sums / count
        squares = _all_reduce((values - mean[:, None]).square().sum(1))
        std = (squares / count).sqrt()
        log_scale = torch.where(std > 0, -torch.log(std + self.eps), 0.0)
        bias = -mean * torch.exp(log_scale)
        if check and not _usable_statistics(x, count, nonfinite, (log_scale, bias), distributed):
            return False
        self.scale.copy_(log_scale.reshape(self.scale.shape))
        self.bias.copy_(bias.reshape(self.bias.shape))
        self.init_on_next_batch = False  # last: other threads read the flag first
        return True

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], Tensor | None]:
        (x,) = x_or_z
        if not self.initialized:
            if rev:
                raise InvGraphError(
                    f"ActNorm: inverse called before initialisation (on a batch of shape "
                    f"{tuple(x.shape)}); run a forward batch or initialize(x) first, or load "
                    f"a state dict"
                )
            self._initialize_on_first_call(x)
        total = self.scale.sum() * self._values_per_channel
        log_det = _constant_log_det(total, x, rev) if jac else None
        if rev:
            return ((x - self.bias) * torch.exp(-self.scale),), log_det
        return (x * torch.exp(self.scale) + self.bias,), log_det

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        errors: list[str],
    ) -> None:
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )
        initialised = infer_actnorm_initialised(state_dict, prefix, missing_keys)
        if initialised is not None:
            self.init_on_next_batch = not initialised

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"


def _usable_statistics(
    x: Tensor, count: Tensor, nonfinite: Tensor, parameters: Sequence[Tensor], distributed: bool
) -> bool:
    """Whether ActNorm's statistics of ``x`` can initialise it (``False``: an empty batch);
    an error for non-finite data or parameters. Reads three numbers: one host sync."""
    # a tensor, not sum()'s 0 for no terms: there are always parameters
    overflows = cast(Tensor, sum((~torch.isfinite(p)).sum() for p in parameters))
    overflow = overflows.reshape(1).to(count)
    total, bad, overflowed = (int(v) for v in torch.cat([count, nonfinite, overflow]).tolist())
    everywhere = ", summed over all processes" if distributed else ""
    if bad:
        raise InvGraphError(
            f"ActNorm: cannot initialise from a batch of shape {tuple(x.shape)} holding {bad} "
            f"non-finite value(s) (NaN or inf{everywhere}): scale and bias would be NaN for "
            "good; initialise from finite data (initialize(x), or a clean first batch)"
        )
    if overflowed:
        raise InvGraphError(
            f"ActNorm: the statistics of the initialisation batch of shape {tuple(x.shape)} "
            f"overflow in {count.dtype}: {overflowed} non-finite scale or bias value(s); "
            "rescale the data"
        )
    return total > 0


class _SignedScaling(_ElementwiseBlock):
    r"""Base of the InvAutoAct family: :math:`z = x \odot e^{a_+}` where :math:`x \ge 0`,
    :math:`z = x \odot e^{a_-}` where :math:`x < 0`, with log-slopes per channel.

    The slopes are positive, so :math:`z` has the sign of :math:`x` and the inverse picks
    the same slope from :math:`z`. Subclasses give :meth:`_log_slopes`.
    """

    def _log_slopes(self) -> tuple[Tensor, Tensor]:
        """The log-slopes :math:`(a_+, a_-)`, each ``(1, C, 1, ...)``."""
        raise NotImplementedError

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], Tensor | None]:
        (x,) = x_or_z
        log_slope = torch.where(x >= 0, *self._log_slopes())
        if rev:
            log_slope = -log_slope
        return (x * torch.exp(log_slope),), sum_except_batch(log_slope) if jac else None


class InvAutoAct(_SignedScaling):
    r"""An invertible leaky ReLU with a learned slope per channel, :math:`e^{\alpha}` and
    :math:`e^{-\alpha}` on the two sides of zero.

    .. math::

        z = \begin{cases} x\, e^{\alpha} & x \ge 0 \\ x\, e^{-\alpha} & x < 0 \end{cases}
        \qquad \log|\det J| = \sum_i \alpha_{c(i)} \operatorname{sign}(x_i).

    ``alpha`` (FrEIA's name) has shape ``(1, C, 1, ...)``: one value per entry of the first
    dimension (features of vectors, channels of images). At exactly :math:`x = 0` the
    slope :math:`e^{\alpha}` is used (FrEIA 0.2 uses 1 there); the output is 0 either way.

    Arguments:
        dims_in: One input shape ``(C, ...)``.
        dims_c: Must be empty: the block takes no conditions.
        slope_init: The initial positive-side slope :math:`e^{\alpha}`; > 0.
        learnable: If ``False``, ``alpha`` is a fixed buffer instead of a parameter.

    References:
        Y. Teng, A. Choromanska, M. Bojarski. Invertible Autoencoder for Domain Adaptation
        (2018). arXiv:1802.06869.

    Example:
        >>> import torch
        >>> from invgraph.modules import InvAutoAct
        >>> act = InvAutoAct([(2,)], slope_init=2.0)
        >>> (z,), log_det = act((torch.tensor([[3.0, -3.0]]),))
        >>> z.tolist(), log_det.tolist()  # log 2 - log 2
        ([[6.0, -1.5]], [0.0])
    """

    alpha: Tensor

    def __init__(
        self,
        dims_in: Dims,
        dims_c: Dims | None = None,
        slope_init: float = 2.0,
        learnable: bool = True,
    ):
        super().__init__(dims_in, dims_c)
        alpha = _log_of_positive(type(self).__name__, "slope_init", slope_init)
        self._per_channel(alpha, "alpha", learnable)

    def _log_slopes(self) -> tuple[Tensor, Tensor]:
        return self.alpha, -self.alpha


class InvAutoActFixed(InvAutoAct):
    r"""An :class:`InvAutoAct` whose slopes never train: ``InvAutoAct(learnable=False)``.

    :math:`z = x\, e^{\alpha}` for :math:`x \ge 0`, :math:`x\, e^{-\alpha}` for
    :math:`x < 0`, with ``alpha`` a buffer. FrEIA 0.2's ``InvAutoActFixed`` takes the same
    arguments but, unless also given ``learnable=False``, trains ``alpha`` anyway.

    Arguments:
        dims_in: One input shape ``(C, ...)``.
        dims_c: Must be empty: the block takes no conditions.
        slope_init: The positive-side slope :math:`e^{\alpha}`; > 0.

    References:
        Y. Teng, A. Choromanska, M. Bojarski. Invertible Autoencoder for Domain Adaptation
        (2018). arXiv:1802.06869.

    Example:
        >>> import torch
        >>> from invgraph.modules import InvAutoActFixed
        >>> act = InvAutoActFixed([(2,)], slope_init=4.0)
        >>> (z,), _ = act((torch.tensor([[1.0, -1.0]]),))
        >>> z.tolist(), list(act.parameters())
        ([[4.0, -0.25]], [])
    """

    def __init__(self, dims_in: Dims, dims_c: Dims | None = None, slope_init: float = 2.0):
        super().__init__(dims_in, dims_c, slope_init=slope_init, learnable=False)


class InvAutoActTwoSided(_SignedScaling):
    r"""An invertible leaky ReLU with separate learned slopes per channel on each side of 0.

    .. math::

        z = \begin{cases} x\, e^{\alpha_+} & x \ge 0 \\ x\, e^{\alpha_-} & x < 0 \end{cases}
        \qquad \log|\det J| = \sum_{i:\, x_i \ge 0} \alpha_{+,c(i)}
        + \sum_{i:\, x_i < 0} \alpha_{-,c(i)}.

    ``alpha_pos`` and ``alpha_neg`` (FrEIA's names) have shape ``(1, C, 1, ...)``. At
    exactly :math:`x = 0` the slope :math:`e^{\alpha_+}` is used (FrEIA 0.2 uses
    :math:`e^{(\alpha_+ + \alpha_-)/2}`); the output is 0 either way.

    Arguments:
        dims_in: One input shape ``(C, ...)``.
        dims_c: Must be empty: the block takes no conditions.
        init_pos: The initial slope :math:`e^{\alpha_+}` for :math:`x \ge 0`; > 0.
        init_neg: The initial slope :math:`e^{\alpha_-}` for :math:`x < 0`; > 0.
        learnable: If ``False``, the slopes are fixed buffers instead of parameters.

    References:
        Y. Teng, A. Choromanska, M. Bojarski. Invertible Autoencoder for Domain Adaptation
        (2018). arXiv:1802.06869.

    Example:
        >>> import torch
        >>> from invgraph.modules import InvAutoActTwoSided
        >>> act = InvAutoActTwoSided([(2,)], init_pos=1.0, init_neg=0.1)
        >>> (z,), log_det = act((torch.tensor([[3.0, -3.0]]),))
        >>> [round(v, 4) for v in z[0].tolist()], round(log_det.item(), 4)  # log 0.1
        ([3.0, -0.3], -2.3026)
    """

    alpha_pos: Tensor
    alpha_neg: Tensor

    def __init__(
        self,
        dims_in: Dims,
        dims_c: Dims | None = None,
        init_pos: float = 2.0,
        init_neg: float = 0.5,
        learnable: bool = True,
    ):
        super().__init__(dims_in, dims_c)
        name = type(self).__name__
        self._per_channel(_log_of_positive(name, "init_pos", init_pos), "alpha_pos", learnable)
        self._per_channel(_log_of_positive(name, "init_neg", init_neg), "alpha_neg", learnable)

    def _log_slopes(self) -> tuple[Tensor, Tensor]:
        return self.alpha_pos, self.alpha_neg
