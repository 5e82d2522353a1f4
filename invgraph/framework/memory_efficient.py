"""Backpropagation without stored activations: inputs reconstructed by the exact inverse.

A standard training step keeps every intermediate tensor that the backward pass needs, so
memory grows with depth. An invertible network does not need them: each block's inputs
follow from its outputs. Here a whole plan runs as one autograd function: its forward
pass keeps only the graph's outputs (latents at any depth included), and its backward
pass walks the blocks in reverse, reconstructs each block's inputs from its outputs by
the block's inverse, recomputes the block with gradients enabled and backpropagates
through that one block (RevNet, Gomez et al. 2017, arXiv:1707.04585), now with the
log-det term.

Kept besides the outputs, because they cannot be reconstructed:

* tensors read as conditions (condition inputs, feed-forward outputs, data ports used as
  conditions): their number does not grow with depth;
* the inputs of blocks whose inverse is approximate (``exact_inverse = False``, as
  :class:`~invgraph.modules.IResNetLayer`'s fixed-point iteration);
* the inputs and random-number state of blocks that drew random numbers (dropout in a
  subnet): the recomputation replays the same numbers, but an inverse cannot be relied on
  to draw them in the same order, so those blocks are not reconstructed.

Autocast is restored for the reconstruction and the recomputation. The graph's
parameters enter the autograd function as inputs, so their gradients arrive in one
accumulation each (DistributedDataParallel's hooks fire as usual).

**When reconstruction fails.** The gradients are exact only as far as the inverse
reconstructs the inputs. A network that has become ill-conditioned (scales near
``exp(±clamp)`` in many consecutive blocks, saturated sigmoids) amplifies rounding errors
through the chain of inverses, and the gradients drift or become NaN where standard
backpropagation is still finite. With ``tolerance`` set, the forward pass keeps a random
sketch of every reconstructed input (:data:`SKETCH_SIZE` numbers per sample) and the
backward pass raises an :class:`~invgraph.errors.InvGraphError` naming the first node whose
reconstruction is off by more than ``tolerance`` (relative, on the sketch). The check
synchronises with the device once per block, so it is off by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..errors import InvGraphError
from .execution import (
    Call,
    Run,
    add_log_det,
    batch_log_det,
    data_slots,
    fill_slots,
    note_failure,
    verify_step,
)
from .plan import Step, StepKind

__all__ = ["SKETCH_SIZE", "run_memory_efficient"]

SKETCH_SIZE = 16
"""Random projections per sample kept by the reconstruction check. The relative error of
the sketch estimates the relative error of the reconstruction within a factor of about
``1 ± 1/sqrt(SKETCH_SIZE / 2)`` (Johnson-Lindenstrauss)."""

_FEED_FORWARD = StepKind.FEED_FORWARD


@torch.compiler.disable  # autograd.Function with a hand-written backward: a graph break
def run_memory_efficient(
    call: Call, entries: Sequence[Tensor], conditions: Sequence[Tensor]
) -> Run:
    """Run a plan keeping no activations; called as
    :func:`~invgraph.framework.execution.run_standard` is, with the same result.

    Arguments:
        call: The plan, the modules, the direction and the options; ``call.tolerance``, if
            not ``None``, checks in the backward pass that each block's reconstructed inputs
            are within this relative error of the real ones (see the module's notes).
            ``call.keep`` is not supported: nothing is kept.
        entries: The call's tensors: the inputs, or the outputs (latents) when ``call.rev``.
        conditions: The conditions, in the plan's order.

    Returns:
        The exit tensors and the summed log-det; gradients reach the entries, the
        conditions and every parameter of the modules.
    """
    if call.keep:
        raise InvGraphError("run_memory_efficient keeps no activations: call it with keep=False")
    parameters = _trainable_parameters(call.modules)
    *exits, log_det = _ReverseReconstruction.apply(
        call, len(entries), len(conditions), *entries, *conditions, *parameters
    )
    return Run(tuple(exits), log_det)


def _trainable_parameters(modules: Sequence[nn.Module]) -> list[nn.Parameter]:
    unique = {id(p): p for module in modules for p in module.parameters() if p.requires_grad}
    return list(unique.values())


def _call_block(
    module: nn.Module, kind: StepKind, data: Sequence[Tensor], conds: Sequence[Tensor], call: Call
) -> tuple[Any, Any]:
    """One step's module call, as the standard executor makes it."""
    if kind is _FEED_FORWARD:
        return (module(*conds),), None
    return module(tuple(data), c=tuple(conds), rev=call.rev, jac=call.jac)


class _RandomState:
    """The random-number generators a block may draw from: the CPU's and its device's."""

    def __init__(self, device: torch.device):
        self.module = None
        if device.type not in ("cpu", "meta"):
            self.module = torch.get_device_module(device.type)
            self.device_type = device.type
            self.index = device.index if device.index is not None else self.module.current_device()

    def get(self) -> tuple[Tensor, Tensor | None]:
        device_state = None if self.module is None else self.module.get_rng_state(self.index)
        return torch.get_rng_state(), device_state

    def replay(self, state: tuple[Tensor, Tensor | None], stack: ExitStack) -> None:
        """Set ``state`` until ``stack`` closes, then restore the generators' states."""
        devices = [] if self.module is None else [self.index]
        device_type = "cuda" if self.module is None else self.device_type
        stack.enter_context(torch.random.fork_rng(devices=devices, device_type=device_type))
        torch.set_rng_state(state[0])
        if self.module is not None:
            self.module.set_rng_state(state[1], self.index)

    @staticmethod
    def same(a: tuple[Tensor, Tensor | None], b: tuple[Tensor, Tensor | None]) -> bool:
        # Generator states live on the host: comparing them does not synchronise a device.
        return all(
            x is y or (x is not None and y is not None and torch.equal(x, y)) for x, y in zip(a, b)
        )


class _Autocast:
    """The autocast state of the call, to be restored in the backward pass.

    The recomputation runs with autocast's cast cache off: the forward pass ran without
    gradients, and casts it cached (torch 2.4-2.6 caches them) would reach the
    recomputed blocks as constants, cutting the parameters' gradients.
    """

    def __init__(self, device_type: str):
        self.device_types = dict.fromkeys([device_type, "cpu"])
        self.states = [
            (kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
            for kind in self.device_types
            if kind != "meta"
        ]

    def __call__(self) -> ExitStack:
        stack = ExitStack()
        for kind, enabled, dtype in self.states:
            stack.enter_context(
                torch.autocast(kind, dtype=dtype, enabled=enabled, cache_enabled=False)
            )
        return stack


def _sketch(tensor: Tensor) -> Tensor:
    """``SKETCH_SIZE`` fixed random projections of each sample, in float64: ``(B, k)``."""
    flat = tensor.detach().flatten(1).double()
    generator = torch.Generator().manual_seed(flat.shape[1])
    projection = torch.randn(flat.shape[1], SKETCH_SIZE, generator=generator, dtype=torch.float64)
    return flat @ projection.to(flat.device) / math.sqrt(SKETCH_SIZE)


def _check_reconstruction(
    call: Call, step: Step, slot: int, rebuilt: Tensor, sketch: Tensor
) -> None:
    """Raise if ``rebuilt`` differs from the tensor whose sketch is ``sketch``."""
    tolerance = call.tolerance
    assert tolerance is not None  # sketches are taken only when a tolerance is set
    error = (_sketch(rebuilt) - sketch).norm(dim=1) / (sketch.norm(dim=1) + 1e-30)
    worst = float(error.max()) if error.numel() else 0.0
    if not worst <= tolerance:  # NaN included
        direction = "inverse" if call.rev else "forward"
        raise InvGraphError(
            f"node {step.name!r} ({direction}, memory-efficient backward): its inverse "
            f"reconstructs its inputs (slot {slot}, shape {call.plan.slot_shapes[slot]}) with a "
            f"relative error of {worst:.3g} > reconstruction_tolerance={tolerance:g}. "
            f"The network has become too ill-conditioned to invert in this precision, so "
            f"the gradients would be wrong: train this step with memory_efficient=False, in "
            f"float64, or with smaller clamps"
        )


class _ReverseReconstruction(torch.autograd.Function):
    """The whole plan as one autograd function whose backward reconstructs activations."""

    @staticmethod
    def forward(
        ctx: Any, call: Call, n_entries: int, n_conditions: int, *tensors: Tensor
    ) -> tuple[Tensor, ...]:
        entries = tensors[:n_entries]
        conditions = tensors[n_entries : n_entries + n_conditions]
        device = entries[0].device
        random = _RandomState(device)
        slots = fill_slots(call.plan, entries, conditions, call.rev)
        checked = call.tolerance is not None and device.type != "meta"

        kept: dict[int, Tensor] = {}  # slots whose values the backward pass cannot rebuild
        kept_inputs: set[int] = set()  # steps whose inputs are kept (not reconstructed)
        random_states: dict[int, Any] = {}  # steps that drew random numbers: the state before
        sketches: dict[int, Tensor] = {}  # slots the backward pass rebuilds: their sketches
        log_det: Any = 0.0
        for index, step in enumerate(call.steps):
            module = call.modules[step.position]
            for slot in step.conditions:
                kept[slot] = slots[slot]
            before = random.get()
            data = [slots[i] for i in step.reads]
            try:
                outputs, block_log_det = _call_block(
                    module, step.kind, data, [slots[i] for i in step.conditions], call
                )
                if call.verify:
                    verify_step(call, step, module, outputs, block_log_det)
            except Exception as error:
                note_failure(error, step, call.rev, ", memory-efficient")
                raise
            if not random.same(before, random.get()):
                random_states[index] = before
            if step.kind is not _FEED_FORWARD and (
                index in random_states or not getattr(module, "exact_inverse", True)
            ):
                kept_inputs.add(index)
                kept.update(zip(step.reads, data))
            elif checked:
                sketches.update((slot, _sketch(t)) for slot, t in zip(step.reads, data))
            for slot, tensor in zip(step.writes, outputs):
                slots[slot] = tensor
            if call.jac and step.kind is not _FEED_FORWARD:
                log_det = add_log_det(log_det, block_log_det)

        exits = tuple(slots[slot] for slot in data_slots(call.plan.exits(call.rev)))
        # An exit that is an entry unchanged must be a new tensor for autograd.
        exits = tuple(t.clone() if any(t is e for e in entries) else t for t in exits)

        ctx.call = call
        ctx.kept_slots = tuple(kept)
        ctx.kept_inputs = kept_inputs
        ctx.random_states = random_states
        ctx.random = random
        ctx.sketches = sketches
        ctx.autocast = _Autocast(device.type)
        ctx.save_for_backward(*exits, *kept.values())
        return (*exits, batch_log_det(entries[0], log_det, call.jac))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        return _Backward(ctx, grads).run()


class _Backward:
    """The backward pass: the steps in reverse, each reconstructed, recomputed, differentiated."""

    def __init__(self, ctx: Any, grads: Sequence[Tensor]):
        call: Call = ctx.call
        plan = call.plan
        self.ctx, self.call = ctx, call
        self.grad_log_det = grads[-1]
        exit_slots = data_slots(plan.exits(call.rev))
        saved = ctx.saved_tensors
        n_slots = len(plan.slot_shapes)
        self.values: list[Any] = [None] * n_slots
        self.slot_grads: list[Any] = [None] * n_slots
        for slot, tensor, grad in zip(exit_slots, saved, grads):
            self.values[slot] = tensor
            self.slot_grads[slot] = _accumulate(self.slot_grads[slot], grad)
        self.kept = dict(zip(ctx.kept_slots, saved[len(exit_slots) :]))

        self.entry_slots = plan.entries(call.rev).slots + plan.conditions.slots
        self.needs: list[bool] = [False] * n_slots
        for entry_slot, flag in zip(self.entry_slots, ctx.needs_input_grad[3:]):
            if entry_slot is not None:  # after call, n_entries, n_conditions
                self.needs[entry_slot] = flag
        self.parameters = _trainable_parameters(call.modules)
        self.parameter_index = {id(p): k for k, p in enumerate(self.parameters)}
        self.parameter_grads: list[Tensor | None] = [None] * len(self.parameters)
        # Which slots carry gradient: those downstream of a tensor or parameter needing it.
        for step in call.steps:
            own = any(p.requires_grad for p in call.modules[step.position].parameters())
            flag = own or any(self.needs[s] for s in step.reads + step.conditions)
            for slot in step.writes:
                self.needs[slot] = flag

    def run(self) -> tuple[Tensor | None, ...]:
        call = self.call
        for index in range(len(call.steps) - 1, -1, -1):
            step = call.steps[index]
            try:
                self.step(index, step)
            except Exception as error:
                note_failure(error, step, call.rev, ", memory-efficient backward")
                raise
            for slot in step.writes:  # every reader of these ports has been processed
                self.values[slot] = self.slot_grads[slot] = None
        grads = [
            None if s is None or not self.needs[s] else self.slot_grads[s] for s in self.entry_slots
        ]
        return (None, None, None, *grads, *self.parameter_grads)

    def step(self, index: int, step: Step) -> None:
        call, ctx = self.call, self.ctx
        module = call.modules[step.position]
        conditions = [self.kept[slot] for slot in step.conditions]
        with torch.no_grad(), ctx.autocast():
            if step.kind is _FEED_FORWARD:
                inputs: list[Tensor] = []
            elif index in ctx.kept_inputs:
                inputs = [self.kept[slot] for slot in step.reads]
            else:
                outputs = tuple(self.values[slot] for slot in step.writes)
                inputs = list(module(outputs, c=tuple(conditions), rev=not call.rev, jac=False)[0])
                for slot, tensor in zip(step.reads, inputs):
                    if slot in ctx.sketches:
                        _check_reconstruction(call, step, slot, tensor, ctx.sketches[slot])
        own = [p for p in module.parameters() if p.requires_grad]
        if own or any(self.needs[s] for s in step.reads + step.conditions):
            self.differentiate(index, step, module, inputs, conditions, own)
        for slot, tensor in zip(step.reads, inputs):
            if self.values[slot] is None:
                self.values[slot] = tensor

    def differentiate(
        self,
        index: int,
        step: Step,
        module: nn.Module,
        inputs: list[Tensor],
        conditions: list[Tensor],
        own: list[nn.Parameter],
    ) -> None:
        """Recompute one block with gradients enabled and backpropagate through it alone."""
        ctx, call, needs = self.ctx, self.call, self.needs
        data = [t.detach().requires_grad_(needs[s]) for s, t in zip(step.reads, inputs)]
        conds = [t.detach().requires_grad_(needs[s]) for s, t in zip(step.conditions, conditions)]
        with torch.enable_grad(), ctx.autocast(), ExitStack() as replay:
            if index in ctx.random_states:
                ctx.random.replay(ctx.random_states[index], replay)
            outputs, log_det = _call_block(module, step.kind, data, conds, call)
        targets, target_grads = [], []
        for slot, tensor in zip(step.writes, outputs):
            if tensor.requires_grad and self.slot_grads[slot] is not None:
                targets.append(tensor)
                target_grads.append(self.slot_grads[slot])
        differentiable = isinstance(log_det, Tensor) and log_det.requires_grad
        if call.jac and step.kind is not _FEED_FORWARD and differentiable:
            targets.append(log_det)
            grad = self.grad_log_det.sum() if log_det.dim() == 0 else self.grad_log_det
            target_grads.append(grad.to(log_det.dtype))
        if not targets:
            return
        wanted = [
            (s, t) for s, t in zip(step.reads + step.conditions, data + conds) if t.requires_grad
        ]
        results = torch.autograd.grad(
            targets, [*(t for _, t in wanted), *own], target_grads, allow_unused=True
        )
        for (slot, _), grad in zip(wanted, results[: len(wanted)]):
            self.slot_grads[slot] = _accumulate(self.slot_grads[slot], grad)
        for parameter, grad in zip(own, results[len(wanted) :]):
            k = self.parameter_index[id(parameter)]
            self.parameter_grads[k] = _accumulate(self.parameter_grads[k], grad)


def _accumulate(total: Tensor | None, grad: Tensor | None) -> Tensor | None:
    if grad is None:
        return total
    return grad if total is None else total + grad
