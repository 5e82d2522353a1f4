r"""Densities defined by invertible networks: change of variables with exact log-dets.

A network :math:`f` mapping data :math:`x` to latents :math:`z = f(x; c)` and a base
density :math:`p_Z` define the data density

.. math::

    \log p_X(x \mid c) = \log p_Z(f(x; c)) + \log |\det J_f(x; c)|.

:class:`FlowDensity` does this for any network of invgraph (several inputs, several outputs
with one base density each, conditions). :class:`StandardNormalDistribution`,
:class:`PushForwardDistribution` and :class:`PullBackDistribution` keep FrEIA master's
names and meaning (``torch.distributions`` objects over one tensor), with the log-det
included: FrEIA's ``log_prob`` ran the network with ``jac=False`` and so dropped it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, constraints
from torch.distributions.constraints import Constraint

from ._checks import as_integer
from .errors import InvGraphError
from .framework.execution import batch_log_det
from .modules.base import InvertibleModule, Shape, call_block
from .modules.inverse import Inverse

__all__ = [
    "ConditionalFlowDistribution",
    "FlowDensity",
    "PullBackDistribution",
    "PushForwardDistribution",
    "StandardNormalDistribution",
    "standard_normal_log_prob",
]

Conditions = Tensor | Sequence[Tensor] | None


def _as_tuple(tensors: Tensor | Sequence[Tensor] | None) -> tuple[Tensor, ...]:
    if tensors is None:
        return ()
    return (tensors,) if isinstance(tensors, Tensor) else tuple(tensors)


def _broadcast_conditions(
    c: Conditions, dims_c: Sequence[Shape], n: int, who: str
) -> tuple[Tensor, ...]:
    """Conditions for a batch of ``n``: each of shape ``(n, *dims)``, ``(1, *dims)`` or
    ``dims`` (the last two are one observation, expanded to ``n`` without a copy)."""
    conditions = _as_tuple(c)
    if len(conditions) != len(dims_c):
        raise InvGraphError(f"{who}: expected {len(dims_c)} condition(s), got {len(conditions)}")
    expanded = []
    for k, (cond, dims) in enumerate(zip(conditions, dims_c)):
        dims = tuple(dims)
        if tuple(cond.shape) == dims:
            cond = cond.unsqueeze(0)
        if tuple(cond.shape[1:]) != dims or cond.shape[0] not in (1, n):
            raise InvGraphError(
                f"{who}: condition {k} must have shape ({n}, {', '.join(map(str, dims))}), "
                f"(1, ...) or {dims}; got {tuple(cond.shape)}"
            )
        expanded.append(cond.expand(n, *dims))
    return tuple(expanded)


def _leading_shape(value: Tensor, shape: Shape, who: str, what: str) -> torch.Size:
    """The dimensions of ``value`` before its trailing ``shape``, which must match."""
    shape = tuple(shape)
    leading = value.shape[: max(value.dim() - len(shape), 0)]
    if value.dim() < len(shape) or tuple(value.shape[len(leading) :]) != shape:
        raise InvGraphError(
            f"{who}: expected {what} of shape (..., {', '.join(map(str, shape))}), got "
            f"{tuple(value.shape)}"
        )
    return leading


def standard_normal_log_prob(z: Tensor, event_dims: int | None = None) -> Tensor:
    r"""The log-density of the standard normal :math:`\mathcal{N}(0, I)` over the last
    ``event_dims`` dimensions of ``z`` (all but the first if ``None``):

    .. math::

        \log \mathcal{N}(z; 0, I) = -\frac{1}{2} \|z\|^2 - \frac{D}{2} \log 2\pi,

    with :math:`D` the number of entries of one event. The one place invgraph writes it:
    for a normal of mean :math:`\mu` and diagonal scales :math:`\sigma`, pass
    :math:`(x - \mu) / \sigma` and subtract :math:`\sum \log \sigma`.

    Arguments:
        z: The values, ``(*batch, *event)``.
        event_dims: How many trailing dimensions form one event; ``None``: ``z.dim() - 1``
            (one event per sample of a batch).

    Returns:
        One log-density per event, of shape ``batch``.

    Example:
        >>> import torch
        >>> standard_normal_log_prob(torch.zeros(3, 2))  # -log(2 pi)
        tensor([-1.8379, -1.8379, -1.8379])
        >>> standard_normal_log_prob(torch.zeros(4, 5, 2), event_dims=1).shape
        torch.Size([4, 5])
    """
    event_dims = z.dim() - 1 if event_dims is None else event_dims
    dims = tuple(range(z.dim() - event_dims, z.dim()))
    size = math.prod(z.shape[z.dim() - event_dims :])
    return -0.5 * z.square().sum(dims) - 0.5 * size * math.log(2 * math.pi)


def _sample_count(n: object, who: str, minimum: int = 0) -> int:
    """``n`` as a number of samples: a Python or NumPy integer (or a 0-dim integer tensor)
    of at least ``minimum``; bools, floats and anything else are refused."""
    count = as_integer(n)
    if count is None or count < minimum:
        raise InvGraphError(
            f"{who}: n must be an integer >= {minimum} (the number of samples), received "
            f"{n!r} of type {type(n).__name__}"
        )
    return count


class StandardNormalDistribution(Independent):  # type: ignore[type-arg]  # torch 2.4: no [...]
    r"""The standard normal :math:`\mathcal{N}(0, I)` over tensors of shape ``event_shape``.

    FrEIA master's class: an :class:`~torch.distributions.Independent` normal whose event
    is the whole tensor, so ``log_prob`` returns one value per sample. Built on a fixed
    ``device``; inside a :class:`FlowDensity` the default base follows the model instead.

    Arguments:
        *event_shape: The shape of one sample.
        device: Where its parameters live.
        dtype: Their dtype.

    Example:
        >>> import torch
        >>> from invgraph.distributions import StandardNormalDistribution
        >>> normal = StandardNormalDistribution(2, 3)
        >>> normal.sample((5,)).shape, normal.log_prob(torch.zeros(5, 2, 3)).shape
        (torch.Size([5, 2, 3]), torch.Size([5]))
    """

    def __init__(self, *event_shape: int, device: Any = None, dtype: torch.dtype | None = None):
        loc = torch.zeros(event_shape, device=device, dtype=dtype)
        normal = Normal(loc, torch.ones_like(loc), validate_args=False)
        super().__init__(normal, len(event_shape), validate_args=False)


class _StandardNormal(nn.Module):
    """The default base of one output: :math:`\\mathcal{N}(0, I)`, on the module's device.

    A non-persistent buffer carries the device and dtype, so ``.to(...)`` moves it and the
    state dict is unchanged."""

    _anchor: Tensor

    def __init__(self, shape: Shape, like: Tensor | None = None):
        super().__init__()
        self.shape = tuple(shape)
        anchor = torch.zeros(()) if like is None else like.new_zeros(())
        self.register_buffer("_anchor", anchor, persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z, len(self.shape))

    def sample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        anchor = self._anchor
        return torch.randn(*sample_shape, *self.shape, device=anchor.device, dtype=anchor.dtype)

    @property
    def mean(self) -> Tensor:
        return self._anchor.new_zeros(self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class FlowDensity(nn.Module):
    r"""The density of data under an invertible network and a base density on its outputs.

    With :math:`z_k = f_k(x; c)` the network's outputs and :math:`p_k` their base densities,

    .. math::

        \log p(x \mid c) = \sum_k \log p_k(z_k) + \log |\det J_f(x; c)|,

    and sampling draws :math:`z_k \sim p_k` and returns :math:`x = f^{-1}(z; c)`.

    Conditions: ``log_prob`` takes them batched like ``x``. ``sample`` takes each as a
    batch of ``n``, or one observation (shape ``dims`` or ``(1, *dims)``) used for all
    ``n`` samples.

    Arguments:
        inn: The network, data to latents: a :class:`~invgraph.GraphINN`,
            :class:`~invgraph.SequenceINN` or any block, also wrapped in
            ``DistributedDataParallel`` or ``DataParallel`` (the wrapper runs the network,
            so that gradients are averaged; shapes are read from the wrapped network).
        base: One distribution per output, in the order of the output nodes: objects with
            ``log_prob(z) -> (batch,)`` and ``sample(sample_shape)``, e.g. a
            ``torch.distributions.Independent``. Those that are ``nn.Module``\ s become
            submodules and move with the model; others stay where they were built. Default:
            a standard normal per output, on the model's device and dtype.

    Example:
        >>> import torch, invgraph as ig
        >>> from invgraph.distributions import FlowDensity
        >>> inn = ig.SequenceINN(2)
        >>> inn.append(ig.PermuteRandom, seed=0)
        >>> density = FlowDensity(inn)
        >>> density.log_prob(torch.zeros(3, 2))
        tensor([-1.8379, -1.8379, -1.8379])
        >>> density.sample(4).shape
        torch.Size([4, 2])

    References:
        Dinh et al., "Density estimation using Real NVP", ICLR 2017, arXiv:1605.08803.
        Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference",
        JMLR 2021, arXiv:1912.02762.
    """

    def __init__(self, inn: InvertibleModule, base: Any = None):
        super().__init__()
        self.inn = inn
        network = self.network
        self.output_shapes = [tuple(s) for s in network.output_dims(network.dims_in)]
        if base is None:  # on the network's device and dtype; .to() moves it with the network
            tensors = itertools.chain(inn.parameters(), inn.buffers())
            like = next((t for t in tensors if t.is_floating_point()), None)
            base = [_StandardNormal(shape, like) for shape in self.output_shapes]
        elif isinstance(base, (Distribution, nn.Module)):
            base = [base]
        base = list(base)
        if len(base) != len(self.output_shapes):
            raise InvGraphError(
                f"FlowDensity: the network has {len(self.output_shapes)} output(s) of shapes "
                f"{self.output_shapes}, but {len(base)} base distribution(s) were given"
            )
        # Modules are registered, so they move with the model (``.to`` moves them in place,
        # so the list below keeps pointing at the live ones); the others are kept as given.
        self.base_modules = nn.ModuleList(b for b in base if isinstance(b, nn.Module))
        self.base: list[Any] = base

    @property
    def network(self) -> InvertibleModule:
        """The network, unwrapped from ``DistributedDataParallel`` or ``DataParallel``."""
        wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
        return self.inn.module if isinstance(self.inn, wrappers) else self.inn

    def log_prob(self, x: Tensor | Sequence[Tensor], c: Conditions = None) -> Tensor:
        """:math:`\\log p(x \\mid c)`, a ``(batch,)`` tensor.

        Arguments:
            x: The data: a tensor, or one per input of the network.
            c: The conditions, batched like ``x``.
        """
        xs = _as_tuple(x)
        zs, log_det = call_block(self.inn, xs, _as_tuple(c), rev=False, jac=True)
        return self._base_log_prob(zs) + batch_log_det(xs[0], log_det, True)

    def _base_log_prob(self, zs: Sequence[Tensor]) -> Tensor:
        """:math:`\\sum_k \\log p_k(z_k)`, a ``(batch,)`` tensor, each term's shape checked."""
        total = batch_log_det(zs[0], 0.0, False)
        for k, z in enumerate(zs):
            term = self.base[k].log_prob(z)
            if tuple(term.shape) != (z.shape[0],):
                raise InvGraphError(
                    f"FlowDensity: base distribution {k} returned log_prob of shape "
                    f"{tuple(term.shape)} for output {k} of shape {tuple(z.shape)}; expected "
                    f"({z.shape[0]},): its event shape must be the output's whole shape "
                    f"{self.output_shapes[k]} (wrap it in torch.distributions.Independent)"
                )
            total = total + term
        return total

    def _latents(self, n: int) -> list[Tensor]:
        """``n`` draws from each base, reparametrised where the base has ``rsample``."""
        return [
            base.rsample((n,)) if getattr(base, "has_rsample", False) else base.sample((n,))
            for base in self.base
        ]

    def nll(self, x: Tensor | Sequence[Tensor], c: Conditions = None) -> Tensor:
        """The mean negative log-likelihood over the batch (nats), a 0-dim tensor."""
        return -self.log_prob(x, c).mean()

    def bits_per_dim(
        self, x: Tensor | Sequence[Tensor], c: Conditions = None, *, n_bins: int | None = None
    ) -> Tensor:
        r"""The mean negative log-likelihood in bits per data dimension.

        .. math::

            \mathrm{bpd} = \frac{\mathrm{nll}}{D \ln 2} + \log_2 n_\mathrm{bins},

        with :math:`D` the number of entries of one sample (over all inputs). For continuous
        data leave ``n_bins`` out. For discrete data with ``n_bins`` levels (256 for 8-bit
        images) scaled and dequantised to :math:`[0, 1)`, pass ``n_bins``: the term converts
        the density on :math:`[0, 1)^D` into the usual discrete bits per dimension.
        """
        size = sum(math.prod(shape) for shape in self.network.dims_in)
        offset = 0.0 if n_bins is None else math.log2(n_bins)
        return self.nll(x, c) / (size * math.log(2)) + offset

    def sample(
        self, n: int, c: Conditions = None, temperature: float | Sequence[float] = 1.0
    ) -> Tensor | tuple[Tensor, ...]:
        """``n`` samples in data space, returned as the network's inverse returns them (one
        tensor per input: a bare tensor for a single input unless ``force_tuple_output``).
        Gradients flow to the parameters (wrap in ``torch.no_grad()`` when not needed).

        Arguments:
            n: The number of samples: an integer ``>= 0`` (Python, NumPy, or a 0-dim
                integer tensor); ``0`` gives empty tensors ``(0, *dims)``.
            c: The conditions: a batch of ``n``, or one observation for all samples.
            temperature: Scales the latents about the base's mean:
                :math:`z = \\mu + T (z' - \\mu)`, :math:`z' \\sim p_k`. For a normal base this
                samples :math:`\\mathcal{N}(\\mu, T^2 \\Sigma)`; ``0`` returns the image of
                the mode. Non-default bases need a ``mean`` for ``temperature != 1``. A
                sequence gives one temperature per output (e.g. per level of a multiscale
                flow), in the order of the outputs.

        Raises:
            InvGraphError: For an ``n`` that is not an integer ``>= 0`` (a bool, a float, a
                negative number), naming the value received.
        """
        n = _sample_count(n, "FlowDensity.sample")
        conditions = _broadcast_conditions(c, self.network.dims_c, n, "FlowDensity.sample")
        if not isinstance(temperature, Sequence):
            temperatures = [temperature] * len(self.base)
        elif len(temperature) == len(self.base):
            temperatures = list(temperature)
        else:
            raise InvGraphError(
                f"FlowDensity.sample: got {len(temperature)} temperature(s) for "
                f"{len(self.base)} output(s); give one number or one per output"
            )
        zs = [
            z if temperature == 1.0 else base.mean + temperature * (z - base.mean)
            for base, temperature, z in zip(self.base, temperatures, self._latents(n))
        ]
        x, _ = self.inn(tuple(zs), c=conditions, rev=True, jac=False)
        return x

    def sample_posterior(
        self, n: int, c: Tensor | Sequence[Tensor], **sample_options: Any
    ) -> Tensor | tuple[Tensor, ...]:
        r"""``n`` samples :math:`x \sim p(x \mid c_b)` for each of a batch of observations.

        .. math::

            x_{b,i} = f^{-1}(z_{b,i}; c_b), \qquad z_{b,i} \sim p_Z,
            \qquad b < B, \; i < n.

        One batched inverse pass: each condition is repeated ``n`` times along the batch
        (``repeat_interleave``, so the rows of observation ``b`` are contiguous), passed to
        :meth:`sample`, and the samples reshaped to ``(B, n, *dims)``.

        Arguments:
            n: The number of samples per observation.
            c: The observations: one tensor of shape ``(B, *dims)`` per condition of the
                network, all with the same ``B``.
            **sample_options: Passed on to :meth:`sample` (e.g. ``temperature``).

        Returns:
            One tensor of shape ``(B, n, *dims)`` per input of the network, returned as
            :meth:`sample` returns them (a bare tensor for a single input).

        Example:
            >>> import torch, invgraph as ig
            >>> from invgraph.distributions import FlowDensity
            >>> x, y = ig.InputNode(4, name="x"), ig.ConditionNode(2, name="y")
            >>> args = {"subnet_constructor": torch.nn.Linear}
            >>> coupling = ig.Node(x, ig.GLOWCouplingBlock, args, conditions=y, name="coupling")
            >>> inn = ig.GraphINN([x, y, coupling, ig.OutputNode(coupling, name="z")])
            >>> FlowDensity(inn).sample_posterior(5, torch.zeros(3, 2)).shape
            torch.Size([3, 5, 4])
        """
        conditions = _as_tuple(c)
        dims_c = [tuple(d) for d in self.network.dims_c]
        who = "FlowDensity.sample_posterior"
        if len(conditions) != len(dims_c) or not conditions:
            raise InvGraphError(
                f"{who}: expected {len(dims_c)} condition(s) of shapes "
                f"{[('B', *d) for d in dims_c]}, got {len(conditions)}"
            )
        batch = conditions[0].shape[0] if conditions[0].dim() > 0 else 0
        for k, (cond, dims) in enumerate(zip(conditions, dims_c)):
            if tuple(cond.shape) != (batch, *dims) or batch < 1:
                raise InvGraphError(
                    f"{who}: condition {k} must have shape ({batch}, "
                    f"{', '.join(map(str, dims))}) (a batch of observations, the same batch "
                    f"for every condition); got {tuple(cond.shape)}"
                )
        n = _sample_count(n, who, minimum=1)
        repeated = tuple(cond.repeat_interleave(n, dim=0) for cond in conditions)
        x = self.sample(batch * n, repeated, **sample_options)
        if isinstance(x, Tensor):
            return x.reshape(batch, n, *x.shape[1:])
        return tuple(t.reshape(batch, n, *t.shape[1:]) for t in x)

    def distribution(
        self, c: Conditions = None, validate_args: bool | None = None
    ) -> ConditionalFlowDistribution:
        r"""This density given the observations ``c``, as a ``torch.distributions``
        object: a :class:`ConditionalFlowDistribution` (read its shapes there).

        Arguments:
            c: The conditions: per condition of the network a tensor of shape
                ``(*batch_shape, *dims)``, ``dims`` for one observation. ``None`` for a
                network without conditions.
            validate_args: Check ``log_prob``'s values, as ``torch.distributions`` does.

        Example:
            >>> import torch, invgraph as ig
            >>> from invgraph.distributions import FlowDensity
            >>> inn = ig.SequenceINN(2)
            >>> inn.append(ig.GLOWCouplingBlock, subnet_constructor=torch.nn.Linear,
            ...            cond=0, cond_shape=(3,))
            >>> q = FlowDensity(inn).distribution(torch.zeros(4, 3))  # four observations
            >>> q.batch_shape, q.event_shape, q.sample((5,)).shape
            (torch.Size([4]), torch.Size([2]), torch.Size([5, 4, 2]))
        """
        return ConditionalFlowDistribution(self, c, validate_args)


class PushForwardDistribution(Distribution):
    r"""The distribution of :math:`x = g(z)`, :math:`z \sim p_Z`, for an invertible ``g``.

    FrEIA master's class, with the log-det that FrEIA dropped:

    .. math::

        \log p(x \mid c) = \log p_Z(g^{-1}(x; c)) + \log |\det J_{g^{-1}}(x; c)|.

    ``g`` must have one input and one output (use :class:`FlowDensity` for more).
    Batch dimensions: ``sample_shape`` and the leading dimensions of ``log_prob``'s value
    are flattened into one batch for ``g``; ``conditions`` then have that batch, or are one
    observation for all. The parameters stay where they are: move ``base_distribution``
    and ``transform`` yourself (or use :class:`FlowDensity`, which moves with ``.to``).

    Arguments:
        base_distribution: :math:`p_Z`, with ``event_shape`` the shape of ``g``'s input.
        transform: :math:`g`, latents to data.

    Example:
        >>> import torch, invgraph as ig
        >>> from invgraph.distributions import PushForwardDistribution as PF
        >>> from invgraph.distributions import StandardNormalDistribution
        >>> g = ig.SequenceINN(3)
        >>> g.append(ig.ActNorm)
        >>> p = PF(StandardNormalDistribution(3), g)
        >>> p.sample((2, 5)).shape, p.log_prob(torch.zeros(4, 3)).shape
        (torch.Size([2, 5, 3]), torch.Size([4]))
    """

    arg_constraints: ClassVar[dict[str, Constraint]] = {}

    def __init__(self, base_distribution: Any, transform: InvertibleModule):
        dims_in = [tuple(d) for d in transform.dims_in]
        dims_out = [tuple(d) for d in transform.output_dims(transform.dims_in)]
        name = type(self).__name__
        if len(dims_in) != 1 or len(dims_out) != 1:
            raise InvGraphError(
                f"{name}: the transform must have one input and one output, it has inputs "
                f"{dims_in} and outputs {dims_out}; use FlowDensity for several"
            )
        super().__init__(torch.Size(), torch.Size(dims_out[0]), validate_args=False)
        self.base_distribution = base_distribution
        self.transform = transform
        self._latent_shape = dims_in[0]

    def _flatten(self, value: Tensor, shape: Shape) -> tuple[Tensor, torch.Size]:
        batch = _leading_shape(value, shape, type(self).__name__, "values")
        return value.reshape(-1, *shape), batch

    def log_prob(self, value: Tensor, conditions: Conditions = None) -> Tensor:
        """:math:`\\log p(x \\mid c)`, one value per sample (the log-det included)."""
        x, batch = self._flatten(value, tuple(self.event_shape))
        c = _broadcast_conditions(conditions, self.transform.dims_c, x.shape[0], "log_prob")
        (z,), log_det = call_block(self.transform, (x,), _as_tuple(c), rev=True, jac=True)
        log_prob = self.base_distribution.log_prob(z) + batch_log_det(x, log_det, True)
        return log_prob.reshape(batch)

    def rsample(
        self, sample_shape: Sequence[int] = torch.Size(), conditions: Conditions = None
    ) -> Tensor:
        """Differentiable samples of shape ``(*sample_shape, *event_shape)``."""
        sample_shape = torch.Size(sample_shape)
        if self.base_distribution.has_rsample:
            z = self.base_distribution.rsample(sample_shape)
        else:
            z = self.base_distribution.sample(sample_shape)
        z, batch = self._flatten(z, self._latent_shape)
        c = _broadcast_conditions(conditions, self.transform.dims_c, z.shape[0], "sample")
        (x,), _ = call_block(self.transform, (z,), _as_tuple(c), rev=False, jac=False)
        return x.reshape(*batch, *self.event_shape)

    def sample(
        self, sample_shape: Sequence[int] = torch.Size(), conditions: Conditions = None
    ) -> Tensor:
        """Samples of shape ``(*sample_shape, *event_shape)``, without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape, conditions)


class PullBackDistribution(PushForwardDistribution):
    r"""The distribution of :math:`x` such that :math:`f(x) \sim p_Z`: a normalizing flow.

    ``f`` maps data to latents (the direction a :class:`~invgraph.GraphINN` is usually
    trained in); this is the push-forward by :math:`f^{-1}`, and

    .. math::

        \log p(x \mid c) = \log p_Z(f(x; c)) + \log |\det J_f(x; c)|.

    Arguments:
        base_distribution: :math:`p_Z`, with ``event_shape`` the shape of ``f``'s output.
        transform: :math:`f`, data to latents, with one input and one output.

    Example:
        >>> import torch, invgraph as ig
        >>> from invgraph.distributions import PullBackDistribution, StandardNormalDistribution
        >>> f = ig.SequenceINN(2)
        >>> f.append(ig.PermuteRandom, seed=0)
        >>> PullBackDistribution(StandardNormalDistribution(2), f).log_prob(torch.zeros(2))
        tensor(-1.8379)
    """

    def __init__(self, base_distribution: Any, transform: InvertibleModule):
        super().__init__(base_distribution, Inverse(transform))


def _observation_batch(
    c: Conditions, dims_c: Sequence[Shape], who: str
) -> tuple[tuple[Tensor, ...], torch.Size]:
    """The conditions as given, checked, and their common batch shape: each condition is
    ``(*batch, *dims)``, the batches broadcast (``dims`` alone is one observation)."""
    conditions = _as_tuple(c)
    dims_c = [tuple(d) for d in dims_c]
    if len(conditions) != len(dims_c):
        raise InvGraphError(
            f"{who}: the network takes {len(dims_c)} condition(s) of shapes "
            f"{[('*batch', *d) for d in dims_c]}, got {len(conditions)}"
        )
    batches = []
    for k, (cond, dims) in enumerate(zip(conditions, dims_c)):
        if not isinstance(cond, Tensor):
            raise InvGraphError(f"{who}: condition {k} must be a tensor, got {type(cond).__name__}")
        batches.append(_leading_shape(cond, dims, who, f"condition {k}"))
    try:
        return conditions, torch.broadcast_shapes(*batches)
    except RuntimeError as error:
        raise InvGraphError(
            f"{who}: the batch shapes of the conditions, {[tuple(b) for b in batches]} (of "
            f"condition shapes {[tuple(cond.shape) for cond in conditions]}), do not broadcast"
        ) from error


class ConditionalFlowDistribution(Distribution):
    r"""A :class:`FlowDensity` given observations, as a :class:`torch.distributions.Distribution`.

    For a network :math:`f` (data to latents) with one input, base :math:`p_Z` and
    observations :math:`c_b`, this is the distribution of :math:`x` with

    .. math::

        \log q(x \mid c_b) = \log p_Z(f(x; c_b)) + \log |\det J_f(x; c_b)|.

    Sampling draws :math:`z \sim p_Z` and returns :math:`x = f^{-1}(z; c_b)`; the same inverse
    pass gives the log-density of its samples,

    .. math::

        \log q(x \mid c_b) = \log p_Z(z) - \log |\det J_{f^{-1}}(z; c_b)|,

    which :meth:`rsample_and_log_prob` returns without a second (forward) pass.

    Shapes, as ``torch.distributions`` defines them: ``event_shape`` is the network's input
    shape; ``batch_shape`` is the batch of the observations (``()`` for one, ``(n,)`` for
    ``n``: each condition ``(*batch_shape, *dims)``; a condition of shape ``dims`` is one
    observation, broadcast). ``sample(sample_shape)`` returns
    ``sample_shape + batch_shape + event_shape``, ``x[s..., b]`` drawn given observation
    ``b``, in one batched inverse pass. ``log_prob(value)`` takes
    ``(..., *event_shape)`` whose leading dimensions broadcast with ``batch_shape`` and
    returns their broadcast shape. Samples are reparametrised (``rsample``): gradients flow
    through the inverse network to its parameters (and to a base's, if it has ``rsample``).
    The object is a view: it follows the density's parameters as they train.

    Usually built by :meth:`FlowDensity.distribution`.

    Arguments:
        density: A :class:`FlowDensity` whose network has one input (any outputs, any
            conditions).
        c: The observations, one tensor per condition of the network (``None`` if it has
            none).
        validate_args: As for any ``torch.distributions`` object: check ``log_prob``'s
            values against :attr:`support` (real and finite-or-infinite, not NaN).

    Raises:
        InvGraphError: For a network with several inputs, or conditions of the wrong
            number or shapes (the message names them).

    Example:
        >>> import torch, invgraph as ig
        >>> from invgraph.distributions import FlowDensity
        >>> inn = ig.SequenceINN(2)
        >>> inn.append(ig.GLOWCouplingBlock, subnet_constructor=torch.nn.Linear,
        ...            cond=0, cond_shape=(1,))
        >>> q = FlowDensity(inn).distribution(torch.tensor([0.5]))  # one observation
        >>> x, log_q = q.rsample_and_log_prob((3,))
        >>> x.shape, log_q.shape, torch.allclose(log_q, q.log_prob(x), atol=1e-5)
        (torch.Size([3, 2]), torch.Size([3]), True)

    References:
        Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference",
        JMLR 2021, arXiv:1912.02762.
    """

    arg_constraints: ClassVar[dict[str, Constraint]] = {}
    has_rsample = True

    def __init__(
        self, density: FlowDensity, c: Conditions = None, validate_args: bool | None = None
    ):
        who = type(self).__name__
        if not isinstance(density, FlowDensity):
            raise InvGraphError(f"{who}: expected a FlowDensity, got {type(density).__name__}")
        dims_in = [tuple(d) for d in density.network.dims_in]
        if len(dims_in) != 1:
            raise InvGraphError(
                f"{who}: the network must have one input (the data), it has {len(dims_in)} "
                f"of shapes {dims_in}; use FlowDensity.log_prob and sample for several"
            )
        self.density = density
        self.conditions, batch_shape = _observation_batch(c, density.network.dims_c, who)
        super().__init__(batch_shape, torch.Size(dims_in[0]), validate_args=validate_args)

    @property
    def support(self) -> Constraint:
        """Real values, the whole input tensor one event."""
        return constraints.independent(constraints.real, len(self.event_shape))

    def expand(
        self, batch_shape: Sequence[int], _instance: Any = None
    ) -> ConditionalFlowDistribution:
        """The same distribution over a larger batch (the observations broadcast), as
        ``pyro.plate`` asks for."""
        batch_shape = torch.Size(batch_shape)
        try:
            fits = torch.broadcast_shapes(self.batch_shape, batch_shape) == batch_shape
        except RuntimeError:
            fits = False
        if not fits:
            raise InvGraphError(
                f"{type(self).__name__}.expand: batch_shape {tuple(self.batch_shape)} does not "
                f"broadcast to {tuple(batch_shape)}"
            )
        new = self._get_checked_instance(ConditionalFlowDistribution, _instance)
        new.density, new.conditions = self.density, self.conditions
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _flat_conditions(self, shape: torch.Size) -> tuple[Tensor, ...]:
        """The conditions of a flat batch of the values of ``shape`` (``(*shape, *dims)``
        flattened to ``(prod(shape), *dims)``)."""
        dims_c = [tuple(d) for d in self.density.network.dims_c]
        return tuple(
            cond.expand(*shape, *dims).reshape(-1, *dims)
            for cond, dims in zip(self.conditions, dims_c)
        )

    def log_prob(self, value: Tensor) -> Tensor:
        """:math:`\\log q(x \\mid c_b)` (the log-det included), of the broadcast shape of
        ``value``'s leading dimensions and ``batch_shape``."""
        who = f"{type(self).__name__}.log_prob"
        event = tuple(self.event_shape)
        leading = _leading_shape(value, event, who, "values")
        try:
            shape = torch.broadcast_shapes(leading, self.batch_shape)
        except RuntimeError as error:
            raise InvGraphError(
                f"{who}: values of shape {tuple(value.shape)}: their batch dimensions "
                f"{tuple(leading)} do not broadcast with batch_shape {tuple(self.batch_shape)}"
            ) from error
        if self._validate_args:
            self._validate_sample(value)
        x = value.expand(*shape, *event).reshape(-1, *event)
        return self.density.log_prob(x, self._flat_conditions(shape)).reshape(shape)

    def _inverse(self, sample_shape: Sequence[int], jac: bool) -> tuple[Tensor, Tensor]:
        """Samples ``sample_shape + batch_shape + event_shape`` and, with ``jac``, their
        log-densities (zeros without), from one inverse pass."""
        shape = torch.Size(sample_shape) + self.batch_shape
        zs = self.density._latents(shape.numel())
        conditions = self._flat_conditions(shape)
        (x,), log_det = call_block(self.density.inn, zs, conditions, rev=True, jac=jac)
        log_q = batch_log_det(zs[0], log_det, jac)
        if jac:
            log_q = self.density._base_log_prob(zs) - log_q
        return x.reshape(*shape, *self.event_shape), log_q.reshape(shape)

    def rsample(self, sample_shape: Sequence[int] = torch.Size()) -> Tensor:
        """Samples of shape ``sample_shape + batch_shape + event_shape``, differentiable
        with respect to the network's parameters."""
        return self._inverse(sample_shape, jac=False)[0]

    def sample(self, sample_shape: Sequence[int] = torch.Size()) -> Tensor:
        """Samples of shape ``sample_shape + batch_shape + event_shape``, without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def __call__(self, sample_shape: Sequence[int] = torch.Size()) -> Tensor:
        """:meth:`rsample`: calling a distribution draws from it, as ``pyro.sample`` does."""
        return self.rsample(sample_shape)

    def rsample_and_log_prob(
        self, sample_shape: Sequence[int] = torch.Size()
    ) -> tuple[Tensor, Tensor]:
        """Differentiable samples and their log-densities (``sample_shape + batch_shape``),
        from one inverse pass: what reverse-KL training (:func:`invgraph.losses.reverse_kl`)
        needs."""
        return self._inverse(sample_shape, jac=True)

    def sample_and_log_prob(
        self, sample_shape: Sequence[int] = torch.Size()
    ) -> tuple[Tensor, Tensor]:
        """:meth:`rsample_and_log_prob` without gradients."""
        with torch.no_grad():
            return self.rsample_and_log_prob(sample_shape)
