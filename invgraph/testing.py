"""Checks that a block or a graph keeps the :class:`~invgraph.modules.InvertibleModule` contract.

:func:`check_block` runs every check on a perturbed float64 copy of a block; each check also
runs alone. A check never raises: it returns a :class:`CheckResult`, and an exception in the
block is a failure. Each check takes ``(block, inputs=None, conditions=None)``: tensors (or
one tensor), else random normal ones from ``block.dims_in`` and ``block.dims_c`` (batch 3, on
the block's device and dtype); a graph's bare output tensor is read as a 1-tuple.

Errors are ``max |a - b| / (1 + |b|)``, absolute near zero and relative for large values, and
pass when at most ``tol``. Default ``tol`` by dtype (round trip / log-det): float64 1e-10 /
1e-8, float32 1e-5 / 1e-3, float16 1e-2 / 5e-2, bfloat16 5e-2 / 2e-1. :func:`check_log_det`
computes in float64 always, so its default is 1e-8.

Example:
    >>> from invgraph.modules import PermuteRandom
    >>> check_block(PermuteRandom([(6,)], seed=0)).passed
    True
"""

from __future__ import annotations

import copy
import functools
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar, cast

import torch
from torch import Tensor

from .errors import InvGraphError
from .framework import InvertibleNetwork
from .modules.base import InvertibleModule, LogDet, call_block

__all__ = [
    "CHECKS",
    "CheckReport",
    "CheckResult",
    "check_block",
    "check_empty_batch",
    "check_inputs_unmodified",
    "check_inverse",
    "check_log_det",
    "check_log_det_shape",
    "check_log_det_symmetry",
    "check_meta_device",
    "check_output_dims",
    "check_save_load",
    "saved_tensor_bytes",
]

Tensors = Sequence[Tensor] | Tensor | None
_T = TypeVar("_T")
_P = ParamSpec("_P")
_TOLERANCES = {  # dtype: (round trip, log-det)
    torch.float64: (1e-10, 1e-8),
    torch.float32: (1e-5, 1e-3),
    torch.float16: (1e-2, 5e-2),
    torch.bfloat16: (5e-2, 2e-1),
}


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: The check's name, e.g. ``"inverse"``.
        passed: Whether the block passed.
        value: The measured figure (e.g. the largest error), if the check measures one.
        tolerance: The bound ``value`` was held to, if any.
        message: What was checked, or what went wrong.
    """

    name: str
    passed: bool
    value: float | None = None
    tolerance: float | None = None
    message: str = ""


@dataclass(frozen=True)
class CheckReport:
    """The results of :func:`check_block`; ``str(report)`` is a table, one row per check.

    Attributes:
        block: A short description of the checked block.
        results: One :class:`CheckResult` per check, in the order they ran.
    """

    block: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(result.passed for result in self.results)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        """The checks that failed."""
        return tuple(result for result in self.results if not result.passed)

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"no check {name!r} in this report")

    def __str__(self) -> str:
        def number(x: float | None) -> str:
            return "-" if x is None else f"{x:.2e}"

        rows = [("check", "result", "value", "tolerance", "message")]
        for r in self.results:
            verdict = "pass" if r.passed else "FAIL"
            rows.append((r.name, verdict, number(r.value), number(r.tolerance), r.message))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join([*map(str.ljust, row[:4], widths), row[4]]).rstrip() for row in rows]
        return "\n".join([f"checks of {self.block}", *lines])

    def assert_ok(self) -> None:
        """Raise :class:`AssertionError` with the table when any check failed."""
        if not self.passed:
            raise AssertionError(f"{len(self.failed)} check(s) failed\n{self}")


CHECKS: dict[str, Callable[..., CheckResult]] = {}
"""Every check by name, in the order :func:`check_block` runs them."""


class _Failed(Exception):
    """Fails the running check with this message."""


def _first_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    return text.splitlines()[0] if text else ""


def _check(body: Callable[_P, CheckResult]) -> Callable[_P, CheckResult]:
    """Register a check in :data:`CHECKS`; an exception inside it becomes its failure."""
    name = body.__name__.removeprefix("check_")

    @functools.wraps(body)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> CheckResult:
        try:
            return body(*args, **kwargs)
        except _Failed as failure:
            return CheckResult(name, False, message=str(failure))
        except Exception as err:  # a check reports, it does not raise
            return CheckResult(name, False, message=f"raised {_first_line(err)}")

    CHECKS[name] = run
    return run


def _both_ways(
    block: InvertibleModule, xs: Sequence[Tensor], cs: Sequence[Tensor], jac: bool = True
) -> tuple[tuple[Tensor, ...], LogDet, tuple[Tensor, ...], LogDet]:
    """``z, log_det(x), f^{-1}(z), log_det(z)``, without gradients, on copies of the inputs."""
    cs = [c.clone() for c in cs]  # an in-place edit is inputs_unmodified's finding only
    with torch.no_grad():
        zs, forward = call_block(block, [x.clone() for x in xs], cs, jac=jac)
        x_back, inverse = call_block(block, [z.clone() for z in zs], cs, rev=True, jac=jac)
    return zs, forward, x_back, inverse


def _inputs(
    block: InvertibleModule, inputs: Tensors, conditions: Tensors, batch: int = 3, seed: int = 0
) -> tuple[Sequence[Tensor], Sequence[Tensor]]:
    """Inputs and conditions as tuples; missing ones are drawn like the given ones or the block."""

    def as_tuple(tensors: Tensors) -> tuple[Tensor, ...]:
        return (tensors,) if isinstance(tensors, Tensor) else tuple(tensors or ())

    given = [*as_tuple(inputs), *as_tuple(conditions)]
    like = next(iter([*given, *block.parameters(), *block.buffers()]), torch.empty(0))
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    batch = len(given[0]) if given else batch
    generator = torch.Generator().manual_seed(seed)

    def given_or_drawn(tensors: Tensors, shapes: list[tuple[int, ...]]) -> tuple[Tensor, ...]:
        if tensors is not None:
            return as_tuple(tensors)
        draws = [torch.randn(batch, *s, generator=generator, dtype=torch.float64) for s in shapes]
        return tuple(t.to(like.device, dtype) for t in draws)

    return given_or_drawn(inputs, block.dims_in), given_or_drawn(conditions, block.dims_c)


def _tol(tol: float | None, xs: Sequence[Tensor], kind: int) -> float:
    return _TOLERANCES.get(xs[0].dtype, _TOLERANCES[torch.float32])[kind] if tol is None else tol


def _error(actual: Sequence[Tensor], expected: Sequence[Tensor], what: str) -> float:
    """``max |a - b| / (1 + |b|)`` over pairs of tensors; NaN counts as infinite."""
    shapes = [tuple(t.shape) for t in actual], [tuple(t.shape) for t in expected]
    if shapes[0] != shapes[1]:
        raise _Failed(f"{what}: shapes {shapes[0]}, expected {shapes[1]}")
    worst = 0.0
    for a, b in zip(actual, expected, strict=True):
        a, b = a.detach().double(), b.detach().double().to(a.device)
        if a.numel():
            err = ((a - b).abs() / (1 + b.abs())).max()
            worst = max(worst, float(torch.nan_to_num(err, nan=math.inf)))
    return worst


def _per_sample(log_det: LogDet, batch: int, like: Tensor) -> Tensor:
    """A constant or ``(B,)``-sized log-det as ``(B,)`` (exact shapes: check_log_det_shape)."""
    if isinstance(log_det, Tensor) and log_det.numel() == batch:
        return log_det.detach().reshape(batch)
    if isinstance(log_det, int | float) or (isinstance(log_det, Tensor) and log_det.dim() == 0):
        return torch.as_tensor(log_det, dtype=like.dtype, device=like.device).expand(batch)
    shape = tuple(log_det.shape) if isinstance(log_det, Tensor) else log_det
    raise _Failed(f"cannot read log-det {shape} as one value per sample (batch {batch})")


@_check
def check_inverse(
    block: InvertibleModule,
    inputs: Tensors = None,
    conditions: Tensors = None,
    *,
    tol: float | None = None,
) -> CheckResult:
    """Round trips :math:`f^{-1}(f(x)) = x`, and :math:`f(f^{-1}(z)) = z` at :math:`z = f(x)`.

    Example:
        >>> from invgraph.modules import HaarDownsampling
        >>> check_inverse(HaarDownsampling([(2, 4, 4)])).passed
        True
    """
    xs, cs = _inputs(block, inputs, conditions)
    tol = _tol(tol, xs, 0)
    zs, _, x_back, _ = _both_ways(block, xs, cs)
    z_again = _both_ways(block, x_back, cs)[0]
    errors = _error(x_back, xs, "x -> z -> x"), _error(z_again, zs, "z -> x -> z")
    message = "x -> z -> x {:.1e}, z -> x -> z {:.1e}".format(*errors)
    return CheckResult("inverse", max(errors) <= tol, max(errors), tol, message)


def _exact_log_det(
    block: InvertibleModule, xs: Sequence[Tensor], cs: Sequence[Tensor], rev: bool
) -> Tensor:
    """Per-sample ``log|det J|`` of the block's map (at batch 1), from its exact Jacobian."""
    shapes = [t.shape[1:] for t in xs]
    values = []
    for i in range(len(xs[0])):
        c_i = tuple(c[i : i + 1].clone() for c in cs)

        def flat_map(v: Tensor, c_i: tuple[Tensor, ...] = c_i) -> Tensor:
            pieces = v.split([math.prod(s) for s in shapes])
            ins = [p.reshape(1, *s).clone() for p, s in zip(pieces, shapes, strict=True)]
            return torch.cat([o.reshape(-1) for o in call_block(block, ins, c_i, rev)[0]])

        v = torch.cat([x[i].reshape(-1) for x in xs])
        try:
            jacobian = torch.func.jacrev(flat_map)(v)
        except Exception:  # not vmap-able (e.g. data-dependent control flow): row by row
            jacobian = torch.autograd.functional.jacobian(flat_map, v)
        if jacobian.shape[0] != jacobian.shape[1]:
            raise _Failed(f"the Jacobian is {tuple(jacobian.shape)}, not square")
        values.append(torch.linalg.slogdet(jacobian)[1])  # -inf when singular: fails later
    return torch.stack(values).detach()


@_check
def check_log_det(
    block: InvertibleModule,
    inputs: Tensors = None,
    conditions: Tensors = None,
    *,
    tol: float = 1e-8,
) -> CheckResult:
    r"""The log-det is :math:`\log|\det J|` of the exact Jacobian, forward and inverse.

    In float64 (on a float64 copy of the block if needed): :func:`torch.func.jacrev` of the
    single-sample map (inputs flattened into one vector, the block called with batch 1) and
    :func:`torch.linalg.slogdet`, against the batched log-det, forward at :math:`x` and
    inverse at :math:`z = f(x)`.

    Example:
        >>> from invgraph.modules import IRevNetDownsampling
        >>> check_log_det(IRevNetDownsampling([(2, 4, 4)])).passed
        True
    """
    xs, cs = _inputs(block, inputs, conditions)
    if any(
        t.dtype != torch.float64
        for t in [*block.parameters(), *block.buffers(), *xs, *cs]
        if t.is_floating_point()
    ):
        block = copy.deepcopy(block).to(torch.float64)
        xs, cs = ([t.double() if t.is_floating_point() else t for t in ts] for ts in (xs, cs))
    zs, forward, _, inverse = _both_ways(block, xs, cs)
    worst, summary = (0.0, "", 0, 0.0, 0.0), []
    for name, at, log_det in (("forward", xs, forward), ("inverse", zs, inverse)):
        exact = _exact_log_det(block, at, cs, rev=name == "inverse")
        ours = _per_sample(log_det, len(exact), exact)
        errors = ((ours - exact).abs() / (1 + exact.abs())).nan_to_num(nan=math.inf)
        i = int(errors.argmax())
        worst = max(worst, (float(errors[i]), name, i, float(ours[i]), float(exact[i])))
        summary.append(f"{name} {float(errors[i]):.1e}")
    value, name, i, ours_i, exact_i = worst
    message = f"{name}, sample {i}: block {ours_i:.6g}, Jacobian {exact_i:.6g}"
    message = ", ".join(summary) if value <= tol else message
    return CheckResult("log_det", value <= tol, value, tol, message)


@_check
def check_log_det_symmetry(
    block: InvertibleModule,
    inputs: Tensors = None,
    conditions: Tensors = None,
    *,
    tol: float | None = None,
) -> CheckResult:
    """The forward log-det at :math:`x` is minus the inverse log-det at :math:`z = f(x)`.

    Example:
        >>> from invgraph.modules import PermuteRandom
        >>> check_log_det_symmetry(PermuteRandom([(6,)], seed=1)).passed
        True
    """
    xs, cs = _inputs(block, inputs, conditions)
    tol = _tol(tol, xs, 1)
    _, forward, _, inverse = _both_ways(block, xs, cs)
    forward, inverse = (_per_sample(ld, len(xs[0]), xs[0]) for ld in (forward, inverse))
    errors = ((forward + inverse).abs() / (1 + forward.abs())).nan_to_num(nan=math.inf)
    value, i = float(errors.max()), int(errors.argmax())
    message = f"sample {i}: forward {float(forward[i]):.6g}, inverse {float(inverse[i]):.6g}"
    message = "forward = -inverse" if value <= tol else message
    return CheckResult("log_det_symmetry", value <= tol, value, tol, message)


@_check
def check_output_dims(
    block: InvertibleModule, inputs: Tensors = None, conditions: Tensors = None
) -> CheckResult:
    """``block.output_dims(block.dims_in)`` are the forward shapes; the inverse's are ``dims_in``.

    Example:
        >>> from invgraph.modules import Flatten
        >>> check_output_dims(Flatten([(2, 4, 4)])).passed
        True
    """
    xs, cs = _inputs(block, inputs, conditions)
    declared = [tuple(s) for s in block.output_dims(list(block.dims_in))]
    zs, _, x_back, _ = _both_ways(block, xs, cs)
    problems = []
    for what, got, want in [
        ("inputs are {}, dims_in is {}", xs, block.dims_in),
        ("forward returns {}, output_dims says {}", zs, declared),
        ("inverse returns {}, dims_in is {}", x_back, block.dims_in),
    ]:
        if [tuple(t.shape[1:]) for t in got] != list(want):
            problems.append(what.format([tuple(t.shape[1:]) for t in got], want))
    if {len(t) for t in (*zs, *x_back)} != {len(xs[0])}:
        problems.append(f"outputs do not keep the batch size {len(xs[0])}")
    message = "; ".join(problems) or f"{block.dims_in} -> {declared}"
    return CheckResult("output_dims", not problems, message=message)


@_check
def check_inputs_unmodified(
    block: InvertibleModule, inputs: Tensors = None, conditions: Tensors = None
) -> CheckResult:
    """Neither direction edits its inputs or conditions (values, or version counters).

    Example:
        >>> from invgraph.modules import HaarUpsampling
        >>> check_inputs_unmodified(HaarUpsampling([(8, 2, 2)])).passed
        True
    """
    xs, cs = _inputs(block, inputs, conditions)
    cs, problems = [c.clone() for c in cs], []

    def watch(direction: str, ins: Sequence[Tensor], rev: bool) -> tuple[Tensor, ...]:
        ins = [t.detach().clone() for t in ins]
        named = [
            *((f"input {k}", t) for k, t in enumerate(ins)),
            *((f"condition {k}", t) for k, t in enumerate(cs)),
        ]
        before = [(t.clone(), t._version) for _, t in named]
        with torch.no_grad():
            outs = call_block(block, ins, cs, rev)[0]
        for (name, t), (value, version) in zip(named, before, strict=True):
            if not torch.equal(t, value):
                problems.append(f"{direction} changed {name}")
            elif t._version != version:
                problems.append(f"{direction} wrote in place to {name}")
        return outs

    watch("inverse", watch("forward", xs, rev=False), rev=True)
    message = "; ".join(problems) or "forward and inverse"
    return CheckResult("inputs_unmodified", not problems, message=message)


@_check
def check_log_det_shape(
    block: InvertibleModule, inputs: Tensors = None, conditions: Tensors = None
) -> CheckResult:
    """The log-det is a constant or a ``(B,)`` tensor on the inputs' device, in their dtype
    promoted to at least float32 (``torch.promote_types(dtype, torch.float32)``: log-dets
    of bfloat16 or float16 inputs are summed and returned in float32, see
    :func:`~invgraph.modules.base.sum_except_batch`).

    A block may return a Python number or a 0-dim tensor for a constant, and ``None`` with
    ``jac=False``; a graph must return exactly ``(B,)``. Both directions, both ``jac``.

    Example:
        >>> from invgraph.modules import Reshape
        >>> check_log_det_shape(Reshape([(2, 4, 4)], output_dims=(8, 4))).passed
        True
    """
    xs, cs = _inputs(block, inputs, conditions)
    batch, graph = len(xs[0]), isinstance(block, InvertibleNetwork)
    shapes: list[tuple[int, ...]] = [(batch,)] if graph else [(batch,), ()]
    problems = []
    dtype, device = torch.promote_types(xs[0].dtype, torch.float32), xs[0].device
    for jac in (True, False):
        _, forward, _, inverse = _both_ways(block, xs, cs, jac=jac)
        for where, log_det in ((f"forward, jac={jac}", forward), (f"inverse, jac={jac}", inverse)):
            if isinstance(log_det, Tensor):
                if tuple(log_det.shape) not in shapes:
                    problems.append(f"{where}: shape {tuple(log_det.shape)}")
                if (log_det.dtype, log_det.device) != (dtype, device):
                    problems.append(f"{where}: {log_det.dtype} on {log_det.device}")
            elif graph or (type(log_det) not in (int, float) and (jac or log_det is not None)):
                kind = type(log_det)
                problems.append(f"{where}: a {kind.__module__}.{kind.__qualname__}")
    expected = f"({batch},) {dtype} on {device}" + (
        "" if graph else ", a constant or None (jac=False)"
    )
    message = f"{'; '.join(problems)}; expected {expected}" if problems else expected
    return CheckResult("log_det_shape", not problems, message=message)


def _describe(log_det: LogDet) -> str:
    return f"shape {tuple(log_det.shape)}" if isinstance(log_det, Tensor) else repr(log_det)


@_check
def check_empty_batch(
    block: InvertibleModule, inputs: Tensors = None, conditions: Tensors = None
) -> CheckResult:
    """A batch of 0 samples runs both ways like any other: outputs ``(0, *shape)``, with the
    shapes of a full batch, and a log-det ``(0,)`` where a full batch's is ``(B,)`` (a block
    whose log-det is a constant may return that constant).

    The empty inputs and conditions are the first zero rows of the given (or drawn) ones;
    the inverse runs on zero rows of the full batch's outputs, so each direction is checked
    on its own. A ``reshape(len(x), -1)`` fails here: ``-1`` cannot be inferred from zero
    elements.

    Example:
        >>> from invgraph.modules import HaarDownsampling
        >>> check_empty_batch(HaarDownsampling([(2, 4, 4)])).passed
        True
    """
    xs, cs = _inputs(block, inputs, conditions)
    zs, forward, x_back, inverse = _both_ways(block, xs, cs)
    empty_cs, problems = [c[:0].clone() for c in cs], []
    for direction, ins, outs, log_det in (
        ("forward", xs, zs, forward),
        ("inverse", zs, x_back, inverse),
    ):
        try:
            with torch.no_grad():
                empty = [t[:0].clone() for t in ins]
                got, got_log_det = call_block(block, empty, empty_cs, rev=direction == "inverse")
        except Exception as err:
            problems.append(f"{direction} raised {_first_line(err)}")
            continue
        shapes, expected = [tuple(t.shape) for t in got], [(0, *t.shape[1:]) for t in outs]
        if shapes != expected:
            problems.append(f"{direction}: outputs {shapes}, expected {expected}")
        per_sample = isinstance(log_det, Tensor) and log_det.dim() > 0
        wanted = (
            [(0, *log_det.shape[1:])] if per_sample and isinstance(log_det, Tensor) else [(0,), ()]
        )
        shape = tuple(got_log_det.shape) if isinstance(got_log_det, Tensor) else None
        constant = shape is None and isinstance(got_log_det, int | float)
        if shape not in wanted and not (constant and not per_sample):
            problems.append(f"{direction}: log-det {_describe(got_log_det)}, expected {wanted[0]}")
    message = "; ".join(problems) or "forward and inverse"
    return CheckResult("empty_batch", not problems, message=message)


@_check
def check_save_load(
    block: InvertibleModule,
    inputs: Tensors = None,
    conditions: Tensors = None,
    *,
    tol: float | None = None,
) -> CheckResult:
    """``torch.save``/``torch.load`` of the module, and a state-dict round trip, keep outputs.

    The state dict goes through ``torch.load(weights_only=True)`` into a deep copy whose
    floating state was changed first, so every tensor in it must be restored.

    Example:
        >>> from invgraph.modules import PermuteRandom
        >>> check_save_load(PermuteRandom([(3, 4, 4)], seed=2)).passed
        True
    """
    xs, cs = _inputs(block, inputs, conditions)
    tol = _tol(tol, xs, 0)

    def round_trip(obj: _T, what: str, weights_only: bool) -> _T:
        buffer = io.BytesIO()
        try:
            torch.save(obj, buffer)
            buffer.seek(0)
            return torch.load(buffer, weights_only=weights_only)
        except Exception as err:
            raise _Failed(f"saving and loading the {what}: {_first_line(err)}") from err

    loaded = round_trip(block, "module", weights_only=False)
    restored = copy.deepcopy(block)
    with torch.no_grad():
        for tensor in restored.state_dict(keep_vars=True).values():
            if isinstance(tensor, Tensor) and tensor.is_floating_point():
                tensor.add_(1.0)
    restored.load_state_dict(round_trip(block.state_dict(), "state dict (weights_only)", True))
    zs, _, x_back, _ = _both_ways(block, xs, cs)
    errors = []
    for label, other in (("torch.load", loaded), ("load_state_dict", restored)):
        zs_other, _, x_back_other, _ = _both_ways(other, xs, cs)
        errors.append((_error(zs_other, zs, label), label, "forward"))
        errors.append((_error(x_back_other, x_back, label), label, "inverse"))
    value, label, direction = max(errors)
    message = f"{label}: the {direction} outputs changed" if value > tol else "module, state dict"
    return CheckResult("save_load", value <= tol, value, tol, message)


@_check
def check_meta_device(
    block: InvertibleModule, inputs: Tensors = None, conditions: Tensors = None
) -> CheckResult:
    """Forward, inverse and backward (of all outputs plus the log-det) run on ``meta``.

    Catches tensors created on a fixed device and host synchronisation (``.item()``,
    ``bool(tensor)``), which meta tensors refuse. Runs on a deep copy moved to ``meta``.

    Example:
        >>> from invgraph.modules import Split
        >>> check_meta_device(Split([(6, 4)], section_sizes=[2, 4])).passed
        True
    """
    xs, cs = _inputs(block, inputs, conditions)
    meta = copy.deepcopy(block).to("meta")

    def on_meta(tensors: Sequence[Tensor], grad: bool) -> list[Tensor]:
        # non-leaf copies: an in-place edit is inputs_unmodified's finding, not this check's
        leaves = [torch.empty_like(t, device="meta") for t in tensors]
        return [t.requires_grad_(grad and t.is_floating_point()).clone() for t in leaves]

    problems, ins = [], on_meta(xs, grad=True)
    for direction in ("forward", "inverse"):
        outs, log_det = call_block(meta, ins, on_meta(cs, grad=False), direction == "inverse")
        log_dets = [log_det] if isinstance(log_det, Tensor) else []
        if any(t.device.type != "meta" for t in (*outs, *log_dets)):
            problems.append(f"{direction} returned tensors off the meta device")
        # a tensor, not sum()'s 0 for no terms: a block has outputs
        loss = cast(Tensor, sum(o.sum() for o in outs) + sum(ld.sum() for ld in log_dets))
        if loss.requires_grad:
            loss.backward()
        else:
            problems.append(f"{direction}: no output depends on the inputs through autograd")
        ins = on_meta(outs, grad=True)
    message = "; ".join(problems) or "forward, inverse, backward"
    return CheckResult("meta_device", not problems, message=message)


def check_block(
    block: InvertibleModule,
    inputs: Tensors = None,
    conditions: Tensors = None,
    *,
    batch_size: int = 3,
    perturb: float = 0.05,
    seed: int = 0,
    dtype: torch.dtype | None = torch.float64,
    device: torch.device | str | None = None,
    checks: Iterable[str] | None = None,
    inverse_tol: float | None = None,
    log_det_tol: float | None = None,
) -> CheckReport:
    """Run every check (or those named in ``checks``) on a perturbed copy of a block.

    The block is left alone: the checks run on a deep copy moved to ``dtype`` and
    ``device``, whose floating parameters get ``perturb * randn`` added (seeded), so that
    blocks initialised to the identity are tested away from it. One forward pass without
    gradients runs first, for data-dependent initialisation.

    Arguments:
        block: The block or graph to check.
        inputs: Inputs; random normal ones from ``block.dims_in`` when ``None``.
        conditions: Conditions; random normal ones from ``block.dims_c`` when ``None``.
        batch_size: Batch size of the random inputs, unless some tensors are given.
        perturb: Scale of the noise added to the parameters (0: check the block as it is).
        seed: Seed of the noise and of the random inputs.
        dtype: Floating dtype of the copy and the inputs (``None``: keep the block's).
        device: Device of the copy and the inputs (``None``: the inputs' or the block's).
        checks: Names from :data:`CHECKS`; all when ``None``.
        inverse_tol: Bound of the round-trip and save/load errors (default by dtype).
        log_det_tol: Bound of the log-det errors (default 1e-8 against the Jacobian, by
            dtype for the symmetry).

    Returns:
        A :class:`CheckReport`; in a test, call its :meth:`~CheckReport.assert_ok`.

    Example:
        >>> from invgraph.modules import Concat
        >>> report = check_block(Concat([(2, 4), (3, 4)]), checks=["inverse", "log_det"])
        >>> [(result.name, result.passed) for result in report.results]
        [('inverse', True), ('log_det', True)]
    """
    names = list(CHECKS) if checks is None else list(checks)
    if set(names) - set(CHECKS):
        unknown = sorted(set(names) - set(CHECKS))
        raise InvGraphError(f"check_block: unknown checks {unknown}; known: {list(CHECKS)}")
    xs, cs = _inputs(block, inputs, conditions, batch_size, seed + 1)
    device = xs[0].device if device is None else torch.device(device)
    copied = copy.deepcopy(block).to(device=device, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in copied.parameters():
            if parameter.is_floating_point():
                noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
                parameter.add_(perturb * noise.to(parameter.device, parameter.dtype))
    xs, cs = (
        [t.to(device, dtype if dtype and t.is_floating_point() else t.dtype) for t in ts]
        for ts in (xs, cs)
    )
    results = []
    try:
        with torch.no_grad():
            call_block(
                copied, [x.clone() for x in xs], cs
            )  # warm-up: data-dependent initialisation
    except Exception as err:
        results.append(CheckResult("warm_up", False, message=f"raised {_first_line(err)}"))
    tols = {"inverse": inverse_tol, "save_load": inverse_tol, "log_det_symmetry": log_det_tol}
    tols["log_det"] = 1e-8 if log_det_tol is None else log_det_tol
    for name in names:
        kwargs = {"tol": tols[name]} if name in tols else {}
        results.append(CHECKS[name](copied, xs, cs, **kwargs))
    return CheckReport(f"{type(block).__name__}({block.extra_repr()})", tuple(results))


def saved_tensor_bytes(step: Callable[[], Tensor], exclude: Iterable[Tensor] = ()) -> int:
    """Bytes that autograd keeps for the backward pass of ``step()``'s result.

    Runs ``step`` (which returns a loss) under
    :func:`torch.autograd.graph.saved_tensors_hooks`, then its backward pass, and adds up
    the storages of the tensors saved for backward, each storage once, leaving out those
    of ``exclude`` (typically the model's parameters, which exist anyway). This is the
    activation memory of a training step, measured the same way in any mode.

    Arguments:
        step: Computes a scalar loss from scratch (forward pass included).
        exclude: Tensors whose storages are not counted.

    Example:
        >>> import torch
        >>> weight = torch.randn(8, 8, requires_grad=True)
        >>> x = torch.randn(32, 8)
        >>> saved_tensor_bytes(lambda: (x @ weight).tanh().sum(), exclude=[weight])
        2048
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = step()
    loss.backward()
    return sum(storages.values())
