"""Memory-efficient mode: the same gradients as standard backpropagation, flat memory."""

from __future__ import annotations

import pytest
import torch
from registry import ConvSubnet, DenseSubnet
from test_graph_inn import conditional_graph, multiscale_graph, perturbed
from torch import nn

import invgraph as ig
from invgraph.testing import saved_tensor_bytes


def _gradients(inn, inputs, conditions=(), rev=False, memory_efficient=False, seed=0):
    """Loss, outputs and the gradients of every input, condition and parameter."""
    inn.memory_efficient = memory_efficient
    inn.zero_grad(set_to_none=True)
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    conditions = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in conditions]
    torch.manual_seed(seed)
    outputs, log_det = inn(inputs, c=conditions or None, rev=rev)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    # Weight every output and sample differently, so that a swapped gradient shows.
    loss = sum((k + 1) * out.square().mean() for k, out in enumerate(outputs))
    loss = loss - (log_det * torch.linspace(0.5, 1.5, len(log_det), dtype=log_det.dtype)).mean()
    loss.backward()
    grads = [t.grad for t in inputs + conditions if t.requires_grad]
    grads += [p.grad for p in inn.parameters()]
    return loss.detach(), [o.detach() for o in outputs], grads


def _assert_same_training_step(inn, inputs, conditions=(), rev=False, rtol=1e-8):
    loss, outputs, grads = _gradients(inn, inputs, conditions, rev, memory_efficient=False)
    loss_me, outputs_me, grads_me = _gradients(inn, inputs, conditions, rev, memory_efficient=True)
    torch.testing.assert_close(loss_me, loss, rtol=rtol, atol=0)
    for out, out_me in zip(outputs, outputs_me):
        torch.testing.assert_close(out_me, out, rtol=rtol, atol=rtol)
    assert len(grads) == len(grads_me)
    assert all(g is not None for g in grads), "the test must give every tensor a gradient"
    for g, g_me in zip(grads, grads_me):
        assert g_me is not None
        assert (g_me - g).abs().max() <= rtol * g.abs().max()


def _images(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("rev", [False, True], ids=["forward", "inverse"])
def test_conditional_graph_gradients_equal_standard_mode(rev):
    """Two inputs, three outputs, a condition node, a conditioning network and a condition
    read from a data port: gradients reach inputs, conditions and every parameter."""
    inn = perturbed(conditional_graph()).double()
    a, b, y = _images(5, 4, seed=1), _images(5, 2, 4, 4, seed=2), _images(5, 3, seed=3)
    inputs = [a, b]
    if rev:
        with torch.no_grad():
            inputs = list(inn([a, b], c=[y])[0])
    _assert_same_training_step(inn, inputs, [y], rev=rev)


def test_multiscale_graph_gradients_equal_standard_mode():
    """Haar, splits, latents leaving at two depths, Reshape, Concat."""
    inn = perturbed(multiscale_graph()).double()
    _assert_same_training_step(inn, [_images(4, 2, 8, 8)])


@pytest.mark.parametrize("rev", [False, True], ids=["forward", "inverse"])
def test_sequence_with_conditions_gradients_equal_standard_mode(rev):
    inn = ig.SequenceINN(6)
    for k in range(4):
        inn.append(ig.AllInOneBlock, cond=k % 2, cond_shape=(3,), subnet_constructor=DenseSubnet)
        inn.append(ig.PermuteRandom, seed=k)
    inn = perturbed(inn).double()
    _assert_same_training_step(inn, [_images(5, 6)], [_images(5, 3, seed=1)] * 2, rev=rev)


def test_float32_gradients_within_1e_4():
    inn = ig.SequenceINN(4, 4, 4)
    for k in range(12):
        inn.append(ig.GLOWCouplingBlock, subnet_constructor=ConvSubnet, clamp=1.5)
        inn.append(ig.PermuteRandom, seed=k)
    inn = perturbed(inn, scale=0.1)
    _assert_same_training_step(inn, [_images(4, 4, 4, 4, dtype=torch.float32)], rtol=1e-4)


class _CountingIResNet(ig.IResNetLayer):
    """An i-ResNet layer that counts its inverse calls."""

    inverse_calls = 0

    def forward(self, x_or_z, c=(), rev=False, jac=True):
        if rev:
            type(self).inverse_calls += 1
        return super().forward(x_or_z, c=c, rev=rev, jac=jac)


def test_approximate_inverse_keeps_inputs_instead_of_inverting():
    """The i-ResNet's fixed-point inverse is approximate: its inputs are kept, never
    reconstructed, so the gradients are exact although its inverse is not."""
    inn = ig.SequenceINN(6)
    inn.append(ig.GLOWCouplingBlock, subnet_constructor=DenseSubnet)
    inn.append(_CountingIResNet, exact_log_det=True, jacobian_iterations=2)  # crude inverse
    inn.append(ig.GLOWCouplingBlock, subnet_constructor=DenseSubnet)
    inn = perturbed(inn, scale=0.1).double()
    _CountingIResNet.inverse_calls = 0
    _assert_same_training_step(inn, [_images(5, 6)])
    assert _CountingIResNet.inverse_calls == 0


class _DropoutSubnet(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Linear(c_in, 32), nn.Dropout(0.5), nn.Tanh(), nn.Linear(32, c_out))


def test_dropout_replays_the_same_random_numbers():
    inn = ig.SequenceINN(6)
    for k in range(3):
        inn.append(ig.GLOWCouplingBlock, subnet_constructor=_DropoutSubnet)
        inn.append(ig.PermuteRandom, seed=k)
    inn = perturbed(inn).double().train()
    x = _images(8, 6)
    _assert_same_training_step(inn, [x])
    # Replaying does not disturb the global generator: the stream continues as in the
    # standard mode.
    states = []
    for memory_efficient in (False, True):
        _gradients(inn, [x], memory_efficient=memory_efficient, seed=3)
        states.append(torch.get_rng_state())
    assert torch.equal(*states)


def test_autocast_is_restored_for_recomputation():
    seen: list[torch.dtype] = []
    inn = ig.SequenceINN(8)
    for k in range(3):
        inn.append(ig.GLOWCouplingBlock, subnet_constructor=DenseSubnet)
        inn.append(ig.PermuteRandom, seed=k)
    inn = perturbed(inn)
    for module in inn.modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    x = _images(16, 8, dtype=torch.float32)
    results = {}
    for memory_efficient in (False, True):
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results[memory_efficient] = _gradients(inn, [x], memory_efficient=memory_efficient)
        assert seen and set(seen) == {torch.bfloat16}  # recomputation ran under autocast too
    (loss, _, grads), (loss_me, _, grads_me) = results[False], results[True]
    torch.testing.assert_close(loss_me, loss)
    for g, g_me in zip(grads, grads_me):
        torch.testing.assert_close(g_me, g, rtol=1e-3, atol=1e-3 * g.abs().max().item())


def _conv_coupling_network(depth: int) -> ig.SequenceINN:
    inn = ig.SequenceINN(4, 4, 4)
    for k in range(depth):
        inn.append(ig.GLOWCouplingBlock, subnet_constructor=ConvSubnet)
        inn.append(ig.PermuteRandom, seed=k)
    return inn


def _step_bytes(inn, memory_efficient: bool) -> int:
    inn.memory_efficient = memory_efficient
    x = _images(2, 4, 4, 4, dtype=torch.float32)

    def step():
        z, log_det = inn(x)
        return 0.5 * z.square().sum() - log_det.sum()

    return saved_tensor_bytes(step, exclude=inn.parameters())


def test_saved_memory_is_flat_in_depth_and_small():
    """Issue 5's criteria: depth 64 <= 1.2x depth 8; <= 0.2x the standard mode at depth 32."""
    saved = {depth: _step_bytes(_conv_coupling_network(depth), True) for depth in (8, 64)}
    assert saved[64] <= 1.2 * saved[8]
    deep = _conv_coupling_network(32)
    assert _step_bytes(deep, True) <= 0.2 * _step_bytes(deep, False)


def test_meta_device_forward_inverse_backward():
    inn = conditional_graph().to("meta")
    inn.memory_efficient = True
    a = torch.randn(3, 4, device="meta", requires_grad=True)
    b = torch.randn(3, 2, 4, 4, device="meta", requires_grad=True)
    y = torch.randn(3, 3, device="meta", requires_grad=True)
    (z0, z1, z2), log_det = inn([a, b], c=[y])
    (z0.sum() + z1.sum() + z2.sum() + log_det.sum()).backward()
    assert a.grad.device.type == "meta" and y.grad.shape == y.shape
    (a_rec, _), _ = inn([z0.detach(), z1.detach(), z2.detach()], c=[y], rev=True)
    assert a_rec.device.type == "meta"


def test_inputs_are_not_modified_and_no_grad_runs_the_standard_path():
    inn = perturbed(multiscale_graph(), scale=0.1)
    inn.memory_efficient = True
    x = torch.randn(3, 2, 8, 8)
    before, version = x.clone(), x._version
    outputs, _ = inn(x)
    assert torch.equal(x, before) and x._version == version
    assert outputs[0].grad_fn is not None
    with torch.no_grad():
        assert inn(x)[0][0].grad_fn is None


def test_data_parallel_replicas_are_refused():
    inn = perturbed(multiscale_graph(), scale=0.1)
    inn.memory_efficient = True
    inn._is_replica = True  # what nn.parallel.replicate sets on each replica (CUDA only)
    with pytest.raises(ig.InvGraphError, match="DistributedDataParallel"):
        inn(torch.randn(2, 2, 8, 8))


def test_errors_name_the_node():
    class Broken(ig.InvertibleModule):
        def forward(self, x_or_z, c=(), rev=False, jac=True):
            raise RuntimeError("boom")

        def output_dims(self, input_dims):
            return input_dims

    x = ig.InputNode(4, name="x")
    broken = ig.Node(x, Broken, name="broken")
    inn = ig.GraphINN([x, broken, ig.OutputNode(broken, name="z")], memory_efficient=True)
    with pytest.raises(RuntimeError, match="boom") as info:
        inn(torch.randn(2, 4, requires_grad=True))
    assert any("broken" in note for note in info.value.__notes__)


def test_torch_compile_runs_it_eagerly_between_compiled_parts():
    """Not traceable with fullgraph=True (documented); with graph breaks allowed, the
    compiled model trains with the same gradients."""
    inn = ig.SequenceINN(6)
    for k in range(3):
        inn.append(ig.GLOWCouplingBlock, subnet_constructor=DenseSubnet)
        inn.append(ig.PermuteRandom, seed=k)
    inn = perturbed(inn).double()
    x = _images(8, 6)
    _, _, grads = _gradients(inn, [x], memory_efficient=True)
    compiled = torch.compile(inn, backend="eager")
    _, _, grads_compiled = _gradients(compiled, [x], memory_efficient=True)
    for g, g_compiled in zip(grads, grads_compiled):
        torch.testing.assert_close(g_compiled, g)


def _ill_conditioned_chain(offset: float) -> ig.SequenceINN:
    """A coupling after an ActNorm that adds ``offset``: in float32 the ActNorm's inverse
    ``(z - offset) e^{-s}`` loses the digits of ``x`` below ``offset``'s rounding step, so
    the coupling is recomputed at the wrong point in the backward pass."""
    inn = ig.SequenceINN(6)
    inn.append(ig.GLOWCouplingBlock, subnet_constructor=DenseSubnet)
    inn.append(ig.ActNorm, init_data=torch.randn(64, 6))
    inn.append(ig.GLOWCouplingBlock, subnet_constructor=DenseSubnet)
    inn = perturbed(inn, scale=0.3)
    with torch.no_grad():
        inn[1].bias.add_(offset)  # z = x e^s + b with |b| >> |x|
    return inn


def test_reconstruction_check_names_the_block_that_cannot_be_inverted():
    x = _images(8, 6, dtype=torch.float32)
    inn = _ill_conditioned_chain(offset=1e6)
    # Unchecked, the gradients are silently wrong (rounding step of 1e6 in float32: 0.06).
    _, _, grads = _gradients(inn, [x])
    _, _, grads_me = _gradients(inn, [x], memory_efficient=True)
    worst = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(grads_me, grads))
    assert worst > 1e-2
    inn.reconstruction_tolerance = 1e-3
    with pytest.raises(
        ig.InvGraphError,
        match=r"node '1' \(forward, memory-efficient backward"
        r"\): its inverse reconstructs its inputs .* relative error of",
    ):
        _gradients(inn, [x], memory_efficient=True)


def test_reconstruction_check_passes_a_well_conditioned_network_unchanged():
    x = _images(8, 6, dtype=torch.float32)
    inn = _ill_conditioned_chain(offset=0.0)
    inn.reconstruction_tolerance = 1e-4
    loss, _, grads = _gradients(inn, [x])
    loss_me, _, grads_me = _gradients(inn, [x], memory_efficient=True)
    torch.testing.assert_close(loss_me, loss)
    for g, g_me in zip(grads, grads_me):
        torch.testing.assert_close(g_me, g, rtol=1e-4, atol=1e-5)
    with pytest.raises(ig.InvGraphError, match="reconstruction_tolerance must be a positive"):
        ig.SequenceINN(6, reconstruction_tolerance=0)


def test_reconstruction_check_on_the_meta_device_checks_nothing():
    inn = _ill_conditioned_chain(offset=0.0).to("meta")
    inn.memory_efficient, inn.reconstruction_tolerance = True, 1e-4
    x = torch.randn(3, 6, device="meta", requires_grad=True)
    z, log_det = inn(x)
    (z.sum() + log_det.sum()).backward()
    assert x.grad.shape == x.shape
