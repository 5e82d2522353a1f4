"""Backpropagation without stored activations: inputs reconstructed by the exact inverse.

A standard training step keeps every intermediate tensor that the backward pass needs, so
memory grows with depth. An invertible network does not need them: each block's inputs
follow from its outputs. Here a whole graph runs as one autograd function: its forward
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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .plan import FEED_FORWARD, Step, at_least_float32, batch_log_det

__all__: list[str] = []  # used through GraphINN(memory_efficient=True) and SequenceINN


@dataclass(frozen=True)
class Program:
    """One call of a graph, as the memory-efficient engine needs it.

    Attributes:
        modules: The modules, indexed by a step's position.
        steps: The plan in the direction of the call.
        n_slots: How many slots (ports) the plan uses.
        entry_slots: Where the call's tensors go (inputs, or outputs when ``rev``).
        exit_slots: Where the results are read.
        condition_slots: Where the conditions go.
        rev: The direction of the call.
        jac: Whether the log-det is computed.
        describe: A node's description from its position, for error messages.
        verify: Called as ``verify(position, outputs, log_det)`` after each step of the
            forward pass (the graphs' first-call shape checks), or ``None``.
    """

    modules: Sequence[nn.Module]
    steps: tuple[Step, ...]
    n_slots: int
    entry_slots: tuple[int, ...]
    exit_slots: tuple[int, ...]
    condition_slots: tuple[int, ...]
    rev: bool
    jac: bool
    describe: Callable[[int], str]
    verify: Callable[[int, Any, Any], None] | None = None


@torch.compiler.disable  # autograd.Function with a hand-written backward: a graph break
def run_memory_efficient(
    program: Program, entries: tuple[Tensor, ...], conditions: tuple[Tensor, ...]
) -> tuple[tuple[Tensor, ...], Tensor]:
    """Run ``program`` on ``entries`` and ``conditions`` keeping no activations.

    Returns:
        The exit tensors and the summed log-det, a ``(batch,)`` tensor (zeros with
        ``jac=False``), as the standard engine; gradients reach the entries, conditions
        and every parameter of the modules.
    """
    parameters = _trainable_parameters(program.modules)
    *exits, log_det = _ReverseReconstruction.apply(
        program, len(entries), len(conditions), *entries, *conditions, *parameters
    )
    return tuple(exits), log_det


def _trainable_parameters(modules: Sequence[nn.Module]) -> list[nn.Parameter]:
    unique = {id(p): p for module in modules for p in module.parameters() if p.requires_grad}
    return list(unique.values())


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
    """The autocast state of the call, to be restored in the backward pass."""

    def __init__(self, device_type: str):
        self.device_types = dict.fromkeys([device_type, "cpu"])
        self.states = [
            (kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
            for kind in self.device_types
            if kind != "meta"
        ]
        self.cache = torch.is_autocast_cache_enabled()

    def __call__(self) -> ExitStack:
        stack = ExitStack()
        for kind, enabled, dtype in self.states:
            stack.enter_context(
                torch.autocast(kind, dtype=dtype, enabled=enabled, cache_enabled=self.cache)
            )
        return stack


class _ReverseReconstruction(torch.autograd.Function):
    """The whole graph as one autograd function whose backward reconstructs activations."""

    @staticmethod
    def forward(ctx: Any, program: Program, n_entries: int, n_conditions: int, *tensors: Tensor):
        entries = tensors[:n_entries]
        conditions = tensors[n_entries : n_entries + n_conditions]
        device = entries[0].device
        random = _RandomState(device)
        slots: list[Any] = [None] * program.n_slots
        for slot, tensor in zip(program.entry_slots, entries):
            slots[slot] = tensor
        for slot, tensor in zip(program.condition_slots, conditions):
            slots[slot] = tensor

        kept: dict[int, Tensor] = {}  # slots whose values the backward pass cannot rebuild
        kept_inputs: set[int] = set()  # steps whose inputs are kept (not reconstructed)
        random_states: dict[int, Any] = {}  # steps that drew random numbers: the state before
        log_det: Any = 0.0
        modules, rev, jac = program.modules, program.rev, program.jac
        for index, (position, kind, reads, conds, writes) in enumerate(program.steps):
            module = modules[position]
            for slot in conds:
                kept[slot] = slots[slot]
            before = random.get()
            try:
                if kind == FEED_FORWARD:
                    outputs, block_log_det = (module(*[slots[i] for i in conds]),), None
                else:
                    outputs, block_log_det = module(
                        tuple([slots[i] for i in reads]),
                        c=tuple([slots[i] for i in conds]),
                        rev=rev,
                        jac=jac,
                    )
            except Exception as error:
                error.add_note(f"raised in node {program.describe(position)} (memory-efficient)")
                raise
            if program.verify is not None:
                program.verify(position, outputs, block_log_det)
            if not random.same(before, random.get()):
                random_states[index] = before
            if kind != FEED_FORWARD and (
                index in random_states or not getattr(module, "exact_inverse", True)
            ):
                kept_inputs.add(index)
                for slot in reads:
                    kept[slot] = slots[slot]
            for slot, tensor in zip(writes, outputs):
                slots[slot] = tensor
            if jac and kind != FEED_FORWARD:
                log_det = log_det + at_least_float32(block_log_det)

        exits = tuple(slots[slot] for slot in program.exit_slots)
        # An exit that is an entry unchanged must be a new tensor for autograd.
        exits = tuple(t.clone() if any(t is e for e in entries) else t for t in exits)
        log_det = batch_log_det(entries[0], log_det, jac)

        ctx.program = program
        ctx.n_entries, ctx.n_conditions = n_entries, n_conditions
        ctx.kept_slots = tuple(kept)
        ctx.kept_inputs = kept_inputs
        ctx.random_states = random_states
        ctx.random = random
        ctx.autocast = _Autocast(device.type)
        ctx.save_for_backward(*exits, *kept.values())
        return (*exits, log_det)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: Tensor):
        program: Program = ctx.program
        modules, rev, jac = program.modules, program.rev, program.jac
        n_exits = len(program.exit_slots)
        saved = ctx.saved_tensors
        grad_log_det = grads[-1]

        values: list[Any] = [None] * program.n_slots
        slot_grads: list[Any] = [None] * program.n_slots
        for slot, tensor, grad in zip(program.exit_slots, saved[:n_exits], grads):
            values[slot] = tensor
            slot_grads[slot] = _accumulate(slot_grads[slot], grad)
        kept = dict(zip(ctx.kept_slots, saved[n_exits:]))
        values_of = values.__getitem__

        inputs = ctx.needs_input_grad[3:]  # after program, n_entries, n_conditions
        needs: list[bool] = [False] * program.n_slots
        for slot, flag in zip(program.entry_slots + program.condition_slots, inputs):
            needs[slot] = flag
        parameters = _trainable_parameters(modules)
        parameter_index = {id(p): k for k, p in enumerate(parameters)}
        parameter_grads: list[Tensor | None] = [None] * len(parameters)
        # Which slots carry gradient: those downstream of a tensor or parameter that needs it.
        for position, _, reads, conds, writes in program.steps:
            own = any(p.requires_grad for p in modules[position].parameters())
            flag = own or any(needs[s] for s in reads + conds)
            for slot in writes:
                needs[slot] = flag

        for index in range(len(program.steps) - 1, -1, -1):
            position, kind, reads, conds, writes = program.steps[index]
            module = modules[position]
            outputs = list(map(values_of, writes))
            condition_values = [kept[slot] for slot in conds]
            try:
                with torch.no_grad(), ctx.autocast():
                    if kind == FEED_FORWARD:
                        block_inputs: list[Tensor] = []
                    elif index in ctx.kept_inputs:
                        block_inputs = [kept[slot] for slot in reads]
                    else:
                        block_inputs = list(
                            module(
                                tuple(outputs), c=tuple(condition_values), rev=not rev, jac=False
                            )[0]
                        )
                local = [s for s in reads + conds if needs[s]]
                own = [p for p in module.parameters() if p.requires_grad]
                if local or own:
                    _backward_step(
                        ctx,
                        index,
                        module,
                        kind,
                        reads,
                        conds,
                        writes,
                        block_inputs,
                        condition_values,
                        needs,
                        slot_grads,
                        own,
                        parameter_index,
                        parameter_grads,
                        grad_log_det if jac and kind != FEED_FORWARD else None,
                    )
            except Exception as error:
                where = f"raised in node {program.describe(position)} (memory-efficient backward)"
                error.add_note(where)
                raise
            for slot, tensor in zip(reads, block_inputs):
                if values[slot] is None:
                    values[slot] = tensor
            for slot in writes:  # every reader of these ports has been processed
                values[slot] = slot_grads[slot] = None

        entry_grads = [slot_grads[s] if needs[s] else None for s in program.entry_slots]
        condition_grads = [slot_grads[s] if needs[s] else None for s in program.condition_slots]
        return (None, None, None, *entry_grads, *condition_grads, *parameter_grads)


def _backward_step(
    ctx,
    index,
    module,
    kind,
    reads,
    conds,
    writes,
    block_inputs,
    condition_values,
    needs,
    slot_grads,
    own,
    parameter_index,
    parameter_grads,
    grad_log_det,
) -> None:
    """Recompute one block with gradients enabled and backpropagate through it alone."""
    program: Program = ctx.program
    detached = [t.detach().requires_grad_(needs[s]) for s, t in zip(reads, block_inputs)]
    detached_conditions = [
        t.detach().requires_grad_(needs[s]) for s, t in zip(conds, condition_values)
    ]
    with torch.enable_grad(), ctx.autocast(), ExitStack() as replay:
        if index in ctx.random_states:
            ctx.random.replay(ctx.random_states[index], replay)
        if kind == FEED_FORWARD:
            outputs, log_det = (module(*detached_conditions),), None
        else:
            outputs, log_det = module(
                tuple(detached), c=tuple(detached_conditions), rev=program.rev, jac=program.jac
            )
    targets, target_grads = [], []
    for slot, tensor in zip(writes, outputs):
        if tensor.requires_grad and slot_grads[slot] is not None:
            targets.append(tensor)
            target_grads.append(slot_grads[slot])
    if grad_log_det is not None and isinstance(log_det, Tensor) and log_det.requires_grad:
        targets.append(log_det)
        grad = grad_log_det.sum() if log_det.dim() == 0 else grad_log_det
        target_grads.append(grad.to(log_det.dtype))
    if not targets:
        return
    wanted = [
        (s, t) for s, t in zip(reads + conds, detached + detached_conditions) if t.requires_grad
    ]
    results = torch.autograd.grad(
        targets, [t for _, t in wanted] + own, target_grads, allow_unused=True
    )
    for (slot, _), grad in zip(wanted, results[: len(wanted)]):
        slot_grads[slot] = _accumulate(slot_grads[slot], grad)
    for parameter, grad in zip(own, results[len(wanted) :]):
        k = parameter_index[id(parameter)]
        parameter_grads[k] = _accumulate(parameter_grads[k], grad)


def _accumulate(total: Tensor | None, grad: Tensor | None) -> Tensor | None:
    if grad is None:
        return total
    return grad if total is None else total + grad
