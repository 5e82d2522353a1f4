"""Running a plan: the standard executor, and what every executor shares.

An executor is called as ``executor(call, entries, conditions)``: a :class:`Call` (the
plan, the network's modules, the direction and the options) and one call's tensors; it
returns a :class:`Run`. There are two: :func:`run_standard` here (autograd records every
block) and :func:`~invgraph.framework.memory_efficient.run_memory_efficient` (the backward
pass reconstructs activations instead of storing them). Both use the hooks below, so they
agree on what they check and report:

* :func:`fill_slots`: the call's tensors into their slots (:func:`data_slots`: where the
  entries and exits are);
* :func:`verify_step`: a block's outputs against the plan's shapes, on a network's first
  call in each direction (``verify=True``);
* :func:`note_failure`: an error raised inside a block gets a note naming the node;
* :func:`add_log_det` and :func:`batch_log_det`: the log-det bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..errors import InvGraphError, add_note
from .nodes import format_shapes
from .plan import Boundary, Plan, Step, StepKind

__all__ = [
    "Call",
    "Run",
    "add_log_det",
    "as_tensors",
    "batch_log_det",
    "check_call",
    "data_slots",
    "fill_slots",
    "note_failure",
    "run_standard",
    "verify_step",
]

_UNARY, _BLOCK, _FEED_FORWARD = StepKind.UNARY, StepKind.BLOCK, StepKind.FEED_FORWARD


@dataclass(frozen=True)
class Run:
    """What an executor returns.

    Attributes:
        exits: The exit tensors (outputs, or inputs for an inverse call), in call order.
        log_det: The summed log-det, a ``(batch,)`` tensor (zeros with ``jac=False``).
        slots: With ``keep=True``, the tensor of every slot (``None`` otherwise).
        log_dets: With ``keep=True``, each block's log-det by module position, as the
            block returned it.
    """

    exits: tuple[Tensor, ...]
    log_det: Tensor
    slots: list[Any] | None = None
    log_dets: dict[int, Any] | None = None


@dataclass(frozen=True)
class Call:
    """One call of a plan, without its tensors: what an executor runs, and how.

    Attributes:
        plan: The plan.
        modules: The network's modules, indexed by a step's ``position``.
        rev: Run the inverse pass.
        jac: Sum the blocks' log-dets (else the log-det is zeros).
        verify: Check each block's outputs against the plan (:func:`verify_step`).
        keep: Keep every slot's tensor and every block's log-det in the :class:`Run`
            (``intermediate_outputs``; the standard executor only).
        tolerance: The memory-efficient executor's reconstruction check: the relative error
            allowed to each block's rebuilt inputs, or ``None`` for no check.
    """

    plan: Plan
    modules: Sequence[nn.Module]
    rev: bool = False
    jac: bool = True
    verify: bool = False
    keep: bool = False
    tolerance: float | None = None

    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps of the call's direction."""
        return self.plan.steps(self.rev)


def run_standard(call: Call, entries: Sequence[Tensor], conditions: Sequence[Tensor]) -> Run:
    """Run a plan in one direction, every block recorded by autograd as usual.

    Arguments:
        call: The plan, the modules, the direction and the options.
        entries: The call's tensors: the inputs, or the outputs (latents) when ``call.rev``.
        conditions: The conditions, in the plan's order.
    """
    plan, modules, rev, jac = call.plan, call.modules, call.rev, call.jac
    slots = fill_slots(plan, entries, conditions, rev)
    log_dets: dict[int, Any] | None = {} if call.keep else None
    log_det: Any = 0.0
    step: Step | None = None
    try:
        for step in call.steps:
            module = modules[step.position]
            kind = step.kind
            if kind is _UNARY:
                outputs, block_log_det = module((slots[step.reads[0]],), rev=rev, jac=jac)
            elif kind is _BLOCK:
                outputs, block_log_det = module(
                    tuple([slots[i] for i in step.reads]),
                    c=tuple([slots[i] for i in step.conditions]),
                    rev=rev,
                    jac=jac,
                )
            else:
                outputs, block_log_det = (module(*[slots[i] for i in step.conditions]),), None
            if call.verify:
                verify_step(call, step, module, outputs, block_log_det)
            if kind is _UNARY:
                slots[step.writes[0]] = outputs[0]
            else:
                for slot, tensor in zip(step.writes, outputs):
                    slots[slot] = tensor
            if kind is not _FEED_FORWARD:
                if jac:
                    log_det = add_log_det(log_det, block_log_det)
                if log_dets is not None:
                    log_dets[step.position] = block_log_det
    except Exception as error:
        if step is not None:
            note_failure(error, step, rev)
        raise
    exits = tuple(slots[slot] for slot in data_slots(plan.exits(rev)))
    log_det = batch_log_det(entries[0], log_det, jac)
    return Run(exits, log_det, slots if call.keep else None, log_dets)


# ---------------------------------------------------------------------- a call's arguments
def as_tensors(value: Any, what: str, owner: str) -> tuple[Any, ...]:
    """A call's tensors as a tuple: ``None`` is none, a tensor is one, a list or tuple is
    itself. Anything else (a NumPy array, whose rows would pass for inputs) is refused."""
    if value is None:
        return ()
    if isinstance(value, Tensor):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise InvGraphError(
        f"{owner}: {what} must be a tensor or a list or tuple of tensors, got "
        f"{_type_name(value)}" + _conversion_hint(value)
    )


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def _conversion_hint(value: Any) -> str:
    if hasattr(value, "__array__") or isinstance(value, (int, float)):
        return " (convert it first, e.g. torch.as_tensor(array, dtype=torch.float32))"
    return ""


def check_call(
    plan: Plan, entries: Sequence[Any], conditions: Sequence[Any], rev: bool, owner: str
) -> None:
    """Refuse a call whose tensors do not fit the plan: their number, type, shape (batch
    dimension excluded), batch size and device, naming the boundary node at fault.

    Entries must be floating point; conditions may be of any dtype (class labels).
    """
    direction = f"{owner} {'inverse' if rev else 'forward'}"
    boundary, what = (plan.outputs, "outputs (latents)") if rev else (plan.inputs, "inputs")
    if len(entries) != len(boundary.names):
        raise InvGraphError(
            f"{direction}: expected {len(boundary.names)} {what} for nodes "
            f"{list(boundary.names)}, got {len(entries)}"
        )
    if len(conditions) != len(plan.conditions.names):
        names = [name or f"#{k} (read by no block)" for k, name in enumerate(plan.conditions.names)]
        raise InvGraphError(
            f"{direction}: expected {len(names)} condition(s) for nodes {names}, "
            f"got {len(conditions)}"
        )
    named = [(n, t, s, "") for n, t, s in zip(boundary.names, entries, boundary.shapes)]
    declared = zip(plan.conditions.names, plan.conditions.shapes, conditions)
    named += [(n or f"#{k}", t, s, "condition ") for k, (n, s, t) in enumerate(declared)]
    first: Tensor | None = None
    for name, tensor, shape, role in named:
        where = f"{direction}: {role}node {name!r}"
        if not isinstance(tensor, Tensor):
            raise InvGraphError(
                f"{where} got {_type_name(tensor)}, not a tensor" + _conversion_hint(tensor)
            )
        if not role and not tensor.is_floating_point():
            raise InvGraphError(
                f"{where} got a tensor of dtype {tensor.dtype}; data must be floating point "
                f"(e.g. x.float())"
            )
        if shape is not None and (tensor.dim() == 0 or tensor.shape[1:] != shape):
            raise InvGraphError(
                f"{where} expects shape (batch, {', '.join(map(str, shape))}), got "
                f"{tuple(tensor.shape)}"
            )
        if first is None:
            first = tensor
        elif tensor.dim() == 0 or tensor.shape[0] != first.shape[0]:
            size = tensor.shape[0] if tensor.dim() else "none (a 0-dim tensor)"
            raise InvGraphError(
                f"{where} has batch size {size}, but the first input has {first.shape[0]}"
            )
        elif tensor.device != first.device:
            raise InvGraphError(
                f"{where} is on device {tensor.device}, but the first input is on {first.device}"
            )


# ---------------------------------------------------------------------- shared hooks
def data_slots(boundary: Boundary) -> tuple[int, ...]:
    """The slots of a plan's inputs or outputs: each has one (only a condition may not)."""
    return cast("tuple[int, ...]", boundary.slots)


def fill_slots(
    plan: Plan, entries: Sequence[Tensor], conditions: Sequence[Tensor], rev: bool
) -> list[Any]:
    """A slot table with the call's entry tensors and conditions in place."""
    slots: list[Any] = [None] * len(plan.slot_shapes)
    for slot, tensor in zip(data_slots(plan.entries(rev)), entries):
        slots[slot] = tensor
    for condition_slot, tensor in zip(plan.conditions.slots, conditions):
        if condition_slot is not None:  # a condition index that no block reads
            slots[condition_slot] = tensor
    return slots


def note_failure(error: BaseException, step: Step, rev: bool, mode: str = "") -> None:
    """Note on ``error`` the node in which it was raised, the direction and the mode."""
    direction = "inverse" if rev else "forward"
    add_note(error, f"raised in node {step.description} ({direction}{mode})")


def verify_step(call: Call, step: Step, module: nn.Module, outputs: Any, log_det: Any) -> None:
    """Check a block's outputs and log-det against the plan; an InvGraphError if they differ.

    The outputs must be a tuple of tensors of the shapes of the step's ``writes`` (the
    block's ``output_dims`` forward, its input shapes inverse); with ``call.jac``, the
    log-det a ``(batch,)`` tensor or a constant.
    """
    plan, rev, jac = call.plan, call.rev, call.jac
    block = type(module).__name__
    direction = "inverse" if rev else "forward"
    if not isinstance(outputs, tuple):
        raise InvGraphError(
            f"node {step.name!r}: {block}.forward ({direction}) must return "
            f"(tuple_of_tensors, log_det), got a {type(outputs).__name__} as outputs"
        )
    expected = [plan.slot_shapes[slot] for slot in step.writes]
    received = [tuple(t.shape[1:]) if isinstance(t, Tensor) else None for t in outputs]
    if received != expected:
        said = "input shapes" if rev and step.kind is not _FEED_FORWARD else "output_dims"
        raise InvGraphError(
            f"node {step.name!r}: {block} ({direction}) returned {len(received)} tensor(s) "
            f"of shapes {received}, but its {said} are {format_shapes(expected)}"
        )
    if not jac or step.kind is _FEED_FORWARD:
        return
    batch = outputs[0].shape[0] if outputs else None
    constant = isinstance(log_det, (int, float)) or (
        isinstance(log_det, Tensor) and log_det.dim() == 0
    )
    batched = isinstance(log_det, Tensor) and tuple(log_det.shape) == (batch,)
    if not (constant or batched):
        shape = tuple(log_det.shape) if isinstance(log_det, Tensor) else None
        raise InvGraphError(
            f"node {step.name!r}: {block} ({direction}) returned a log-det of type "
            f"{type(log_det).__name__} and shape {shape}; expected a (batch,) = ({batch},) "
            f"tensor or a constant"
        )


# ---------------------------------------------------------------------- log-dets
def add_log_det(total: Any, log_det: Any) -> Any:
    """``total + log_det``, a block's low-precision log-det (under autocast) promoted to
    float32 first: a sum of many bfloat16 terms would lose most of its digits."""
    if isinstance(log_det, Tensor) and log_det.dtype in (torch.float16, torch.bfloat16):
        log_det = log_det.float()
    return total + log_det


def batch_log_det(reference: Tensor, log_det: Any, jac: bool) -> Tensor:
    """The summed log-det as a ``(batch,)`` tensor on ``reference``'s device.

    Blocks may return constants (a number or a 0-dim tensor); a graph whose blocks all do,
    or a call with ``jac=False`` (zeros, as FrEIA returns), still gives a ``(batch,)`` tensor.
    Its dtype is ``reference``'s, at least float32: low-precision inputs get a float32
    log-det.
    """
    dtype = torch.promote_types(reference.dtype, torch.float32)  # low precision: float32
    if jac and isinstance(log_det, Tensor) and log_det.dim() == 1 and log_det.dtype == dtype:
        return log_det
    return reference.new_zeros(reference.shape[0], dtype=dtype) + (log_det if jac else 0.0)
