"""Fixed permutations of the channels (or features)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import InvertibleModule, Shape, single_input

__all__ = ["PermuteRandom"]


class PermuteRandom(InvertibleModule):
    r"""A fixed random permutation :math:`\pi` of dimension 0: :math:`z_{:, i} = x_{:, \pi(i)}`.

    Dimension 0 (batch excluded) is the channels of images and the features of vectors.
    The permutation is drawn once, at construction, and never trained;
    :math:`\log|\det J| = 0`. Placed between coupling blocks, it lets every dimension be
    transformed in turn.

    The permutation and its inverse are buffers ``perm`` and ``perm_inv``: they are saved in
    the ``state_dict`` (under FrEIA's names, so FrEIA checkpoints load), move with ``.to()``
    and are not in ``.parameters()``.

    Arguments:
        dims_in: One input shape ``(C, ...)``.
        dims_c: Must be empty: the block takes no conditions.
        seed: Seed of a private :class:`torch.Generator`, for a reproducible permutation
            (on the CPU, so the same on every device); the global random states of torch and
            NumPy are left alone. With ``None``, the permutation is drawn from torch's global
            generator, like the initial weights of any module.

    Example:
        >>> import torch
        >>> from invgraph.modules import PermuteRandom
        >>> permute = PermuteRandom([(4,)], seed=0)
        >>> x = torch.tensor([[10.0, 11.0, 12.0, 13.0]])
        >>> (z,), log_det = permute((x,))
        >>> sorted(z[0].tolist()), log_det
        ([10.0, 11.0, 12.0, 13.0], 0.0)
        >>> torch.equal(z[0], x[0, permute.perm]), [name for name, _ in permute.named_buffers()]
        (True, ['perm', 'perm_inv'])
    """

    perm: Tensor
    perm_inv: Tensor

    takes_conditions = False

    def __init__(
        self,
        dims_in: Sequence[Sequence[int]],
        dims_c: Sequence[Sequence[int]] | None = None,
        seed: int | None = None,
    ):
        super().__init__(dims_in, dims_c)
        (channels, *_) = self.output_dims(self.dims_in)[0]
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(channels, generator=generator, device="cpu")
        # Drawn on the CPU; then placed like any other module's tensors, i.e. on the device
        # of an enclosing `with torch.device(...)` block, if any.
        device = torch.empty(0).device
        self.register_buffer("perm", perm.to(device))
        self.register_buffer("perm_inv", torch.argsort(perm).to(device))

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], float]:
        (x,) = x_or_z
        return (x.index_select(1, self.perm_inv if rev else self.perm),), 0.0

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        return [single_input("PermuteRandom", input_dims)]
