r"""Continuous normalizing flows: an ODE's flow map as an invertible block (FFJORD).

A vector field :math:`v(x, t; c)` defines the ordinary differential equation
:math:`\dot x(t) = v(x(t), t; c)`. For a field Lipschitz in :math:`x` (a network of
Lipschitz layers is), its solution from :math:`t = 0` to :math:`t = 1` is a bijection
:math:`f: x(0) \mapsto x(1)` (trajectories never cross), and its log-determinant obeys the
instantaneous change of variables

.. math::

    \frac{\mathrm d}{\mathrm dt} \log\left|\det \frac{\partial x(t)}{\partial x(0)}\right|
    = \operatorname{tr} \frac{\partial v}{\partial x}(x(t), t; c)
    = \nabla \cdot v(x(t), t; c),

so that :math:`\log|\det J_f| = \int_0^1 \nabla \cdot v \,\mathrm dt`. :class:`ContinuousFlow`
integrates the state and this integral together, with a fixed-step Runge-Kutta solver, and
its inverse integrates backwards from :math:`t = 1` to :math:`t = 0`. The field is any
network; flow matching (:func:`invgraph.losses.flow_matching_loss`) trains it without
solving the ODE.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..errors import InvGraphError
from ..subnets import Activation, build_activation, check_activation
from .base import InvertibleModule, Shape, flat_conditions, single_input, sum_except_batch

__all__ = ["ContinuousFlow"]

FieldConstructor = Callable[[int, int], nn.Module]
"""Builds the field network from ``(c_in, c_out)``, like a coupling's subnet constructor."""

_Tableau = tuple[tuple[tuple[float, ...], ...], tuple[float, ...], tuple[float, ...]]

# Explicit Runge-Kutta methods as Butcher tableaus (a, b, c): stage i is evaluated at
# x + h * sum_j a[i][j] k_j and time t + c[i] h; the step adds h * sum_i b[i] k_i.
_SOLVERS: dict[str, _Tableau] = {
    "euler": (((),), (1.0,), (0.0,)),
    "midpoint": (((), (0.5,)), (0.0, 1.0), (0.0, 0.5)),
    "rk4": (
        ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        (1 / 6, 1 / 3, 1 / 3, 1 / 6),
        (0.0, 0.5, 0.5, 1.0),
    ),
}
_ORDERS = {"euler": 1, "midpoint": 2, "rk4": 4}
# torchdiffeq's adaptive methods, with their orders (used only when torchdiffeq is installed)
_ADAPTIVE = {"dopri5": 5, "dopri8": 8, "bosh3": 3, "adaptive_heun": 2, "fehlberg2": 2}
_LOG_DETS = ("exact", "hutchinson")

_Field = Callable[[Tensor], Tensor]


def _default_field(
    c_in: int, c_out: int, hidden: Sequence[int], activation: Activation
) -> nn.Sequential:
    """``Linear, activation, ..., Linear`` through the ``hidden`` widths; the last layer zero."""
    widths = [c_in, *hidden]
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(widths):
        layers += [nn.Linear(n_in, n_out), build_activation("ContinuousFlow", activation)]
    last = nn.Linear(widths[-1], c_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class ContinuousFlow(InvertibleModule):
    r"""A continuous normalizing flow: :math:`z = x(1)` where :math:`\dot x = v(x, t; c)`,
    :math:`x(0) = x`.

    .. math::

        z = x + \int_0^1 v(x(t), t; c)\,\mathrm dt, \qquad
        \log|\det J| = \int_0^1 \operatorname{tr} \frac{\partial v}{\partial x}(x(t), t; c)
        \,\mathrm dt.

    **Direction.** Forward (data to latent) integrates from :math:`t = 0` to :math:`t = 1`,
    the inverse (latent to data, sampling) from :math:`t = 1` back to :math:`t = 0`. This is
    the time of :func:`~invgraph.losses.flow_matching_loss`, whose path
    :math:`x_t = (1 - t)\,x + t\,z` runs from the data at :math:`t = 0` to the noise at
    :math:`t = 1`: a field trained by it is used as it is.

    **The field.** Inputs of any shape are flattened to vectors of :math:`D` features;
    :math:`v` is a network of :math:`[x, \tau(t), c]` (the conditions flattened and
    concatenated) with :math:`D` outputs, where :math:`\tau(t) = t`, followed with
    ``time_frequencies`` :math:`K > 0` by :math:`\sin(\pi k t), \cos(\pi k t)` for
    :math:`k = 1..K`. By default an MLP through the ``hidden`` widths; its last layer starts
    at zero, so the block starts as the identity (:math:`v = 0`, log-det 0).

    **The solver.** ``steps`` steps of size :math:`h = 1 /` ``steps`` of an explicit
    Runge-Kutta method (``"euler"``, order 1, one field evaluation per step;
    ``"midpoint"``, order 2, two; ``"rk4"``, the classical method, order 4, four), in a fixed
    Python loop: no host synchronisation, no data-dependent branch, so the block compiles
    with ``torch.compile(fullgraph=True)`` and runs on the ``meta`` device. The log-det is
    integrated alongside the state, by the same method (the augmented ODE
    :math:`(x, \ell)` with :math:`\dot\ell = \nabla\cdot v`), from the divergence at every
    stage whose weight :math:`b_i` is not zero:

    * ``log_det="exact"``: :math:`\operatorname{tr} \partial v / \partial x` by :math:`D`
      vector-Jacobian products (:func:`torch.func.vjp`, vectorised by
      :func:`torch.func.vmap` over the basis vectors): exact, for small :math:`D`.
    * ``log_det="hutchinson"``: Hutchinson's estimator :math:`\epsilon^\top (\partial v /
      \partial x)\, \epsilon`, one vector-Jacobian product per stage, with one Rademacher
      vector :math:`\epsilon` per sample and call, shared by all stages and steps (as in
      FFJORD). Unbiased for the exact mode's value, and noisy: a training loss, not a
      likelihood to report.

    Both are differentiable: gradients reach the field's parameters and the inputs, so the
    block trains by maximum likelihood too. Under :func:`torch.no_grad` the divergence is
    still computed (:mod:`torch.func`'s transforms need no grad mode), without a gradient.

    **This block is approximate.** The forward and the inverse are two discretisations of
    one flow, and the log-det is the solver's quadrature of :math:`\int \nabla\cdot v`, not
    the log-determinant of the discretised map's Jacobian; all three converge as
    :math:`h \to 0`. Measured by ``tests/modules/test_continuous.py`` (float64, 2-D input,
    the default field at seed 0 with its last layer drawn with standard deviation 1, mean
    :math:`|\log\det|` 0.55, 64 samples): the largest error of the map :math:`f(x)` against
    the exact flow (a 256-step rk4 solve), of the round trip :math:`f^{-1}(f(x))` against
    :math:`x`, and of the log-det against :func:`torch.linalg.slogdet` of the
    :func:`torch.func.jacrev` Jacobian of the discretised map (the inverse's log-det against
    the inverse map's Jacobian is as close):

    ========  =====  ========  ==========  =======
    solver    steps  map       round trip  log-det
    ========  =====  ========  ==========  =======
    rk4       4      3.5e-5    1.4e-5      2.7e-5
    rk4       8      2.5e-6    4.4e-7      1.8e-6
    rk4       16     1.7e-7    1.4e-8      1.1e-7
    midpoint  4      1.8e-2    3.6e-3      1.4e-2
    midpoint  8      4.8e-3    4.5e-4      4.0e-3
    midpoint  16     1.3e-3    5.6e-5      1.1e-3
    euler     4      2.2e-1    2.1e-1      1.1e-1
    euler     8      1.2e-1    1.1e-1      6.0e-2
    euler     16     6.3e-2    5.6e-2      3.2e-2
    ========  =====  ========  ==========  =======

    Doubling the steps from 8 to 16 divides the map's error by 15.0, 3.8 and 1.9 and the
    log-det's by 15.5, 3.7 and 1.9: the orders :math:`p` = 4, 2 and 1. The round trip
    converges faster for the even orders, dividing by 32.0, 8.0 and 1.96 (orders 5, 3, 1):
    the backward solve is the adjoint method, whose leading error term equals the method's
    for an even order, so that they cancel (Hairer, Lubich and Wanner, *Geometric Numerical
    Integration*, II.3). These orders need a smooth field: with ReLU the map's ratios were
    5.2, 1.8 and 7.7 from 8 to 64 steps of rk4. With the memory-saving mode of a graph, this
    block's inputs are stored, not reconstructed (``exact_inverse = False``).

    **Mixed precision.** Under :func:`torch.autocast` the field runs in low precision, like
    every subnetwork in this library; the states, the stages and the log-det stay in the
    data's precision. Unlike a coupling's, this block's round trip then holds only to the
    low precision (measured under bfloat16 autocast with the field above: round trip
    1.3e-3, against 1.4e-6 in float32; log-det 5.3e-3 off the float32 value).

    **Costs and limits.** Each step costs one field evaluation per stage, plus one
    vector-Jacobian product per stage (``"hutchinson"``) or :math:`D` of them, vectorised
    (``"exact"``; memory :math:`D` times a batch's). Gradients flow through every step:
    the memory of a training step grows with ``steps``.

    **Adaptive solvers and the adjoint method** come from ``torchdiffeq`` when it is
    installed (``pip install torchdiffeq``; never required): ``solver="dopri5"`` (or
    ``"dopri8"``, ``"bosh3"``, ``"adaptive_heun"``, ``"fehlberg2"``) chooses its steps to
    meet ``rtol`` and ``atol`` (``steps`` is then unused), and ``adjoint=True`` computes the
    gradients by solving the adjoint ODE backwards instead of backpropagating through the
    solver's steps (memory independent of the number of steps; Chen et al.). The step size
    control decides in Python from the values, so these solvers synchronise with the device
    and do not compile with ``fullgraph=True``. Measured by the tests (float64, the field
    above, tolerances 1e-9): ``dopri5`` agrees with 64 rk4 steps to 6e-9 in the map and
    3e-9 in the log-det, and the adjoint gradients with backpropagation's to 6e-7.

    The divergence takes the batch's samples as independent (no batch statistics, such as
    batch normalisation's in training mode, in the field). With the log-det,
    :func:`torch.export.export` fails (:mod:`torch.func` does not export in torch 2.13);
    with ``jac=False``, for sampling, the block exports.

    Arguments:
        dims_in: One input shape, of any number of dimensions (flattened to :math:`D`).
        dims_c: Condition shapes, flattened and concatenated to the field's input.
        field_constructor: Builds the field network from ``(c_in, c_out)``, with
            :math:`c_\mathrm{in} = D + 1 + 2K + \sum |c|` and :math:`c_\mathrm{out} = D`;
            it maps ``(B, c_in)`` to ``(B, c_out)``. ``None``: an MLP (``hidden``,
            ``activation``) whose last layer starts at zero.
        hidden: Widths of the default field's hidden layers.
        activation: Builds the default field's activations; a smooth one (``nn.SiLU``,
            ``nn.Tanh``, ``nn.Softplus``) keeps the solvers' orders (ReLU's kinks break them).
        steps: Number of solver steps, each way.
        solver: ``"rk4"``, ``"midpoint"`` or ``"euler"``; with torchdiffeq, an adaptive one.
        log_det: ``"exact"`` or ``"hutchinson"``.
        time_frequencies: :math:`K`, the number of sine/cosine pairs of :math:`t` fed to
            the field with :math:`t` itself (0: :math:`t` alone).
        rtol: Relative tolerance of an adaptive solver.
        atol: Absolute tolerance of an adaptive solver.
        adjoint: Gradients by the adjoint method (an adaptive solver only).

    Raises:
        InvGraphError: For a hyperparameter out of range, or (at the first call) a field
            whose output shape is not ``(B, D)``.

    References:
        Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential Equations",
        NeurIPS 2018, arXiv:1806.07366.
        Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud, "FFJORD: Free-form Continuous
        Dynamics for Scalable Reversible Generative Models", ICLR 2019, arXiv:1810.01367.
        Hutchinson, "A stochastic estimator of the trace of the influence matrix for
        Laplacian smoothing splines", Communications in Statistics 1989.

    Example:
        >>> import torch
        >>> import invgraph as ig
        >>> inn = ig.SequenceINN(2)
        >>> inn.append(ig.ContinuousFlow, hidden=(32, 32), steps=16)
        >>> _ = torch.nn.init.normal_(inn[0].field[-1].weight, std=0.1)  # away from identity
        >>> x = torch.randn(5, 2, dtype=torch.float64)
        >>> z, log_det = inn.double()(x)
        >>> x_back, inverse_log_det = inn(z, rev=True)
        >>> bool((x_back - x).abs().max() < 1e-6), bool((log_det + inverse_log_det).abs().max()
        ...                                               < 1e-6)
        (True, True)
    """

    exact_inverse = False  # the backward solve only approximates the forward's inverse

    def __init__(
        self,
        dims_in: Sequence[Sequence[int]],
        dims_c: Sequence[Sequence[int]] | None = None,
        field_constructor: FieldConstructor | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: Activation = nn.SiLU,
        steps: int = 8,
        solver: str = "rk4",
        log_det: str = "exact",
        time_frequencies: int = 0,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        adjoint: bool = False,
    ):
        super().__init__(dims_in, dims_c)
        shape = single_input("ContinuousFlow", self.dims_in)
        self._check_arguments(field_constructor, hidden, activation, steps, solver, log_det)
        if isinstance(time_frequencies, bool) or not isinstance(time_frequencies, int):
            raise InvGraphError(
                f"ContinuousFlow: time_frequencies must be an integer >= 0, got "
                f"{time_frequencies!r}"
            )
        if time_frequencies < 0:
            raise InvGraphError(
                f"ContinuousFlow: time_frequencies must be an integer >= 0, got {time_frequencies}"
            )
        self.features = math.prod(shape)
        self.steps, self.solver, self.log_det = steps, solver, log_det
        self.rtol, self.atol, self.adjoint = float(rtol), float(atol), bool(adjoint)
        if self.adjoint and solver not in _ADAPTIVE:
            raise InvGraphError(
                f"ContinuousFlow: adjoint=True needs one of torchdiffeq's adaptive solvers "
                f"{sorted(_ADAPTIVE)}, got solver={solver!r}"
            )
        self.time_frequencies = time_frequencies
        c_in = self.features + 1 + 2 * time_frequencies
        c_in += sum(math.prod(s) for s in self.dims_c)
        self.field: nn.Module
        if field_constructor is None:
            self.field = _default_field(c_in, self.features, tuple(hidden), activation)
        else:
            field = field_constructor(c_in, self.features)
            if not isinstance(field, nn.Module):
                raise InvGraphError(
                    f"ContinuousFlow: field_constructor must return an nn.Module, "
                    f"{field_constructor!r} returned {type(field).__name__}"
                )
            self.field = field

    @staticmethod
    def _check_arguments(
        field_constructor: object,
        hidden: Sequence[int],
        activation: object,
        steps: object,
        solver: object,
        log_det: object,
    ) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InvGraphError(f"ContinuousFlow: steps must be a positive integer, got {steps!r}")
        if solver in _ADAPTIVE:
            _torchdiffeq()  # fails now, naming the package, if it is not installed
        elif solver not in _SOLVERS:
            raise InvGraphError(
                f"ContinuousFlow: solver must be one of {sorted(_SOLVERS)}, or with torchdiffeq "
                f"installed one of {sorted(_ADAPTIVE)}, got {solver!r}"
            )
        if log_det not in _LOG_DETS:
            raise InvGraphError(
                f"ContinuousFlow: log_det must be one of {list(_LOG_DETS)}, got {log_det!r}"
            )
        if field_constructor is not None:
            if not callable(field_constructor):
                raise InvGraphError(
                    f"ContinuousFlow: field_constructor must be callable as "
                    f"field_constructor(c_in, c_out), got {field_constructor!r}"
                )
            return
        widths = tuple(hidden)
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise InvGraphError(
                f"ContinuousFlow: hidden widths must be positive integers, got {widths!r}"
            )
        check_activation("ContinuousFlow", activation)

    @property
    def order(self) -> int:
        """The order :math:`p` of the solver: the map's and the log-det's errors fall as
        :math:`h^p` (see the class)."""
        return _ORDERS.get(self.solver) or _ADAPTIVE[self.solver]

    def _time_features(self, t: Tensor) -> Tensor:
        """:math:`\\tau(t)`: ``(B, 1)`` times to ``(B, 1 + 2K)`` features."""
        if not self.time_frequencies:
            return t
        k = torch.arange(1, self.time_frequencies + 1, dtype=t.dtype, device=t.device)
        angles = math.pi * k * t
        return torch.cat([t, angles.sin(), angles.cos()], dim=1)

    def _field_at(self, t: Tensor, context: Tensor | None) -> _Field:
        """:math:`x \\mapsto v(x, t; c)` on ``(B, D)`` states, in the states' dtype."""
        features = self._time_features(t)

        def v(x: Tensor) -> Tensor:
            pieces = [x, features.to(x.dtype)]
            if context is not None:
                pieces.append(context.to(x.dtype))
            inputs = torch.cat(pieces, dim=1)
            out = self.field(inputs)
            if tuple(out.shape) != tuple(x.shape):
                raise InvGraphError(
                    f"ContinuousFlow: the field must map inputs of shape (B, {inputs.shape[1]}) "
                    f"to velocities of shape (B, {self.features}), it returned shape "
                    f"{tuple(out.shape)} for inputs {tuple(inputs.shape)}"
                )
            return out.to(x.dtype)  # under autocast the field runs in low precision

        return v

    def _context(self, c: Sequence[Tensor]) -> Tensor | None:
        """The conditions flattened and concatenated, ``(B, sum |c|)``, or ``None``."""
        return flat_conditions(self, c)

    def velocity(self, x: Tensor, t: Tensor | float, c: Sequence[Tensor] = ()) -> Tensor:
        """The field :math:`v(x, t; c)` at inputs ``x`` of shape ``(B, *dims_in[0])``.

        Arguments:
            x: The states, shaped like the block's inputs.
            t: The time: a number, or a tensor of shape ``()``, ``(B,)`` or ``(B, 1)``.
            c: The conditions, as for :meth:`forward`.

        Returns:
            The velocities, shaped like ``x`` and in its dtype.
        """
        shape = self.dims_in[0]
        if tuple(x.shape[1:]) != shape:
            raise InvGraphError(
                f"ContinuousFlow: velocity expects x of shape (B, {', '.join(map(str, shape))}), "
                f"received {tuple(x.shape)}"
            )
        batch = x.shape[0]
        time = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if time.dim() == 0:
            time = time.expand(batch)
        if tuple(time.shape) not in ((batch,), (batch, 1)):
            raise InvGraphError(
                f"ContinuousFlow: velocity expects t of shape (), ({batch},) or ({batch}, 1), "
                f"received {tuple(time.shape)}"
            )
        flat = x.reshape(batch, self.features)
        v = self._field_at(time.reshape(batch, 1), self._context(c))(flat)
        return v.reshape(x.shape)

    def _divergence(self, v: _Field, x: Tensor, noise: Tensor | None) -> tuple[Tensor, Tensor]:
        """``v(x)`` and its divergence (exact, or Hutchinson's estimate with ``noise``)."""
        # torch.func's transforms ignore an outer no_grad: the divergence is computed under
        # it too, and then carries no gradient (with grad mode on, it does)
        velocity, vjp = torch.func.vjp(v, x)  # type: ignore[misc]  # has_aux's 3-tuple
        if noise is not None:
            (row,) = vjp(noise)  # noise^T dv/dx
            return velocity, sum_except_batch(row * noise)
        n = self.features
        basis = torch.eye(n, dtype=x.dtype, device=x.device)[:, None, :].expand(n, *x.shape)
        (rows,) = torch.func.vmap(vjp)(basis)  # rows[i, b] = e_i^T dv/dx at sample b
        return velocity, sum_except_batch(rows.diagonal(dim1=0, dim2=2))

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], Tensor | None]:
        (inputs,) = x_or_z
        batch = inputs.shape[0]
        x = inputs.reshape(batch, self.features)
        context = self._context(c)
        hutchinson = jac and self.log_det == "hutchinson"
        noise = 2 * torch.randint_like(x, 2) - 1 if hutchinson else None  # Rademacher
        log_det = x.new_zeros(batch, dtype=torch.promote_types(x.dtype, torch.float32))
        if self.solver in _ADAPTIVE:
            x, log_det = self._solve_adaptive(x, log_det, context, noise, rev, jac)
            return (x.reshape(inputs.shape),), log_det if jac else None
        a, b, nodes = _SOLVERS[self.solver]
        h = -1.0 / self.steps if rev else 1.0 / self.steps
        start = 1.0 if rev else 0.0
        for step in range(self.steps):
            t = start + step * h
            ks: list[Tensor] = []
            divergence: Tensor | float = 0.0
            for a_i, b_i, c_i in zip(a, b, nodes):
                stage = x
                for a_ij, k_j in zip(a_i, ks):
                    if a_ij:
                        stage = stage + (a_ij * h) * k_j
                v = self._field_at(x.new_full((batch, 1), t + c_i * h), context)
                if jac and b_i:
                    k, div = self._divergence(v, stage, noise)
                    divergence = divergence + b_i * div
                else:
                    k = v(stage)
                ks.append(k)
            for b_i, k_i in zip(b, ks):
                if b_i:
                    x = x + (b_i * h) * k_i
            log_det = log_det + h * divergence
        out = x.reshape(inputs.shape)
        return (out,), log_det if jac else None

    def _solve_adaptive(
        self,
        x: Tensor,
        log_det: Tensor,
        context: Tensor | None,
        noise: Tensor | None,
        rev: bool,
        jac: bool,
    ) -> tuple[Tensor, Tensor]:
        """The state and the log-det at the end, by torchdiffeq's adaptive ``self.solver``."""
        torchdiffeq = _torchdiffeq()
        dynamics = _Dynamics(self, context, noise, jac)
        times = torch.tensor([1.0, 0.0] if rev else [0.0, 1.0], dtype=x.dtype, device=x.device)
        options: dict[str, object] = {"rtol": self.rtol, "atol": self.atol, "method": self.solver}
        if self.adjoint:
            tensors: list[Tensor] = [p for p in self.parameters() if p.requires_grad]
            if context is not None and context.requires_grad:
                tensors.append(context)
            options["adjoint_params"] = tuple(tensors)
            solve = torchdiffeq.odeint_adjoint
        else:
            solve = torchdiffeq.odeint
        xs, log_dets = solve(dynamics, (x, log_det), times, **options)
        return xs[-1], log_dets[-1]

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        return [single_input("ContinuousFlow", input_dims)]

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, steps={self.steps}, solver={self.solver!r}, "
            f"log_det={self.log_det!r}, time_frequencies={self.time_frequencies}"
        )


def _torchdiffeq():  # type: ignore[no-untyped-def]  # an optional module
    """``torchdiffeq``, or an error saying how to install it."""
    try:
        import torchdiffeq  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise InvGraphError(
            f"ContinuousFlow: the adaptive solvers {sorted(_ADAPTIVE)} and the adjoint method "
            f"come from torchdiffeq, which is not installed: pip install torchdiffeq (or use "
            f"a fixed-step solver: {sorted(_SOLVERS)})"
        ) from None
    return torchdiffeq


class _Dynamics(nn.Module):
    r"""The augmented ODE :math:`(\dot x, \dot\ell) = (v(x, t; c), \nabla\cdot v)` as
    torchdiffeq's ``func(t, state)``; a module, as its adjoint method requires."""

    def __init__(
        self, flow: ContinuousFlow, context: Tensor | None, noise: Tensor | None, jac: bool
    ):
        super().__init__()
        self.flow, self.context, self.noise, self.jac = flow, context, noise, jac

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, log_det = state
        v = self.flow._field_at(t.reshape(1, 1).expand(x.shape[0], 1), self.context)
        if not self.jac:
            return v(x), torch.zeros_like(log_det)
        velocity, divergence = self.flow._divergence(v, x, self.noise)
        return velocity, divergence.to(log_det.dtype)
