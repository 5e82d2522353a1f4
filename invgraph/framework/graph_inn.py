"""GraphINN: a DAG of nodes compiled once into one reversible module."""

from __future__ import annotations

from collections.abc import Iterable

from ..compat import deprecated_alias
from .analysis import gather
from .network import InvertibleNetwork
from .nodes import AbstractNode
from .plan import plan_graph

__all__ = ["GraphINN", "ReversibleGraphNet"]


class GraphINN(InvertibleNetwork):
    r"""An invertible network built from a DAG of nodes.

    The graph is checked, sorted topologically and compiled into a
    :class:`~invgraph.framework.plan.Plan` (the module calls of each direction over
    integer slots) when the network is built; a call runs the plan. With
    :math:`f = f_K \circ \dots \circ f_1` the blocks in topological order, the forward
    pass returns :math:`z = f(x; c)` and

    .. math::

        \log |\det J_f(x)| = \sum_{k=1}^{K} \log |\det J_{f_k}(x_{k-1})|,

    the inverse pass returns :math:`x = f^{-1}(z; c)` and :math:`-\log|\det J_f(x)|`.

    Inputs, outputs and conditions are matched by their order in ``node_list``.

    Arguments:
        node_list: The graph's nodes, or only its output nodes (the rest is collected).
        force_tuple_output: Return a tuple even for a single output.
        check_shapes: Check the number, type, shapes, batch size and device of the inputs
            and conditions before any block runs (cheap), and each block's outputs against
            its ``output_dims`` the first time each direction runs. Set ``False`` to skip
            the input checks in hot loops.
        verbose: Print the graph once built.
        memory_efficient: Train without storing activations (also settable later as the
            attribute ``memory_efficient``): while gradients are being recorded, the graph
            runs as one autograd function that keeps only its outputs and the tensors read
            as conditions, and the backward pass reconstructs each block's inputs by its
            inverse and recomputes the block (see :mod:`invgraph.framework.memory_efficient`
            for what is kept and why). Saved memory is flat in depth; a step costs one extra
            inverse and one extra forward per block. Not traced by ``torch.compile`` and not
            supported by ``nn.DataParallel`` (use ``DistributedDataParallel``).
        reconstruction_tolerance: With ``memory_efficient``, check in the backward pass
            that every block's inverse reconstructs its inputs within this relative error,
            and raise naming the block otherwise (one device synchronisation per block;
            ``None``, the default, checks nothing).

    Example:
        >>> import torch, invgraph as ig
        >>> x = ig.InputNode(4, 8, 8, name="x")
        >>> haar = ig.Node(x, ig.HaarDownsampling, name="haar")
        >>> split = ig.Node(haar, ig.Split, {"section_sizes": [4, 12]}, name="split")
        >>> z1 = ig.OutputNode(split.out0, name="z1")
        >>> flat = ig.Node(split.out1, ig.Flatten, name="flat")
        >>> z2 = ig.OutputNode(flat, name="z2")
        >>> inn = ig.GraphINN([x, haar, split, z1, flat, z2])
        >>> (z1, z2), log_det = inn(torch.randn(5, 4, 8, 8))
        >>> tuple(z1.shape), tuple(z2.shape), tuple(log_det.shape)
        ((5, 4, 4, 4), (5, 192), (5,))
        >>> x_rec, _ = inn([z1, z2], rev=True)
        >>> tuple(x_rec.shape)
        (5, 4, 8, 8)

    References:
        Ardizzone et al., "Analyzing Inverse Problems with Invertible Neural Networks",
        ICLR 2019, arXiv:1808.04730 (the graph formulation of FrEIA).
    """

    def __init__(
        self,
        node_list: AbstractNode | Iterable[AbstractNode],
        force_tuple_output: bool = False,
        check_shapes: bool = True,
        verbose: bool = False,
        memory_efficient: bool = False,
        reconstruction_tolerance: float | None = None,
    ):
        super().__init__()
        self._configure(
            force_tuple_output, check_shapes, memory_efficient, reconstruction_tolerance
        )
        self._adopt(plan_graph(gather(node_list, "GraphINN"), "GraphINN"))
        if verbose:
            print(self.describe())


ReversibleGraphNet = deprecated_alias(
    GraphINN,
    "ReversibleGraphNet",
    __name__,
    positional=("node_list", "ind_in", "ind_out", "verbose"),
    refused={
        "ind_in": "the inputs are the InputNodes of node_list, in their order",
        "ind_out": "the outputs are the OutputNodes of node_list, in their order",
    },
)
