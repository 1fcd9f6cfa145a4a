"""Every weight-space model by name, for the experiments, the comparison runner, the
command line and :func:`graphnfn.load_model`: one list, one builder.

    model = registry.build("nfn-hnp", ws, d_out=10, readout="invariant", fourier=16)
    model = registry.build("pna", batch, d_out=10, readout="invariant")

Names: the graph models (:data:`GRAPH_MODELS`), the parameter-sharing models of
:mod:`graphnfn.paramshare` (:data:`PARAMSHARE_MODELS`, including the ``stat`` and
``flat-mlp`` baselines) and three more sanity baselines (:data:`BASELINES`): ``flat-mlp-aug``
(``flat-mlp`` trained on hidden-neuron-permuted copies; the permutation is the training
loop's job), ``align-linear`` (:class:`graphnfn.paramshare.AlignLinear`, not a module:
:func:`build` refuses it) and ``probe-mlp`` (:class:`graphnfn.probe_baseline.ProbeMLP`: the
networks' outputs on the probe inputs, the yardstick of probe features; reads graphs), plus
editing's three yardsticks (:data:`EDIT_REFERENCES`, fitted on nothing): ``no-edit`` (each INR's
own image), ``mean-target`` (the train split's mean edited image for every INR) and
``refit-output`` (each INR's output layer refit by least squares to the edit of its own image).
Readouts are named alike for both families: ``"invariant"`` ([B, d_out]) and
``"equivariant"`` (per-weight outputs for editing).
"""
from __future__ import annotations

from torch import Tensor, nn

from . import paramshare
from .features import ProbeFeatures
from .models import BACKBONES, GraphNFN
from .probe_baseline import ProbeMLP
from .readouts import readout_name
from .sign_model import SignGNN
from .statistics import MAX_TENSORS

SIGN_GNN = "sign-gnn"
GRAPH_MODELS = BACKBONES + (SIGN_GNN,)  # GraphNFN is named by its backbone
PARAMSHARE_MODELS = tuple(paramshare.MODELS)
PROBE_MLP = "probe-mlp"  # reads graph batches, needs probe inputs
EDIT_REFERENCES = ("no-edit", "mean-target", "refit-output")  # editing's yardsticks: what learning has to beat
BASELINES = ("flat-mlp-aug", "align-linear", PROBE_MLP) + EDIT_REFERENCES
MODELS = GRAPH_MODELS + PARAMSHARE_MODELS + BASELINES
READOUTS = ("invariant", "equivariant")


def family(name: str) -> str:
    """``"graph"`` (reads NeuralGraph batches), ``"paramshare"`` (reads weight spaces),
    ``"align"`` (the non-learning align-linear baseline, on weight spaces) or ``"reference"``
    (an editing yardstick, on weight spaces)."""
    if name in GRAPH_MODELS or name == PROBE_MLP:
        return "graph"
    if name == "align-linear":
        return "align"
    if name in EDIT_REFERENCES:
        return "reference"
    if name in PARAMSHARE_MODELS + BASELINES:
        return "paramshare"
    raise ValueError(f"unknown model {name!r}: choose a graph model {GRAPH_MODELS}, a parameter-sharing model "
                     f"{PARAMSHARE_MODELS} or a baseline {BASELINES}")


def learns(name: str) -> bool:
    """False for the baselines fitted without gradient steps (align-linear, the editing references)."""
    return family(name) not in ("align", "reference")


def check_tensor_stats(value) -> None:
    """ValueError unless ``value`` is a ``tensor_stats`` setting: False, True or "fourier"."""
    if value not in (False, True, "fourier"):
        raise ValueError(f"tensor_stats must be False, True or 'fourier', got {value!r}")


def check_dropout(rate) -> None:
    """ValueError unless ``rate`` is a dropout rate in [0, 1)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {rate}")


def build(name: str, sample, d_out: int, readout: str = "invariant", d_hidden: int = 32, n_layers: int = 3,
          heads: int = 4, fourier: int = 16, positional: bool = True, layer_embedding: bool = True,
          probe_inputs: Tensor | None = None, symmetry: str | None = None, zero_output: bool = False,
          edit_scale: float | None = None, pool: str = "graph", recompute: bool | None = None,
          tensor_stats: bool | str = False, dropout: float = 0.0, probe_act_param: float | None = None,
          input_scales: dict | None = None, edge_product: int = 0) -> nn.Module:
    """The model ``name`` for inputs like ``sample`` (a graph batch, or a weight space whose
    ``spec`` fixes a parameter-sharing model's shapes and group).

    Both families get the same Gaussian Fourier encoding of every weight and bias
    (``fourier`` frequencies; 0: raw), except where a model's group admits none: positive
    scalings (``monomial`` / ``magep`` on ReLU networks) read raw weights. ``model.encoding``
    names what each model read. ``d_hidden`` is the graph models' width and the
    parameter-sharing models' ``hidden``; ``probe_inputs`` ([P, n_inputs], MLPs and INRs) gives
    both families every neuron's activations on these inputs: the graph models as node features,
    the parameter-sharing ones as bias channels (:class:`graphnfn.paramshare.ProbeChannels`, run
    with ``probe_act_param``, SIREN's w0, which a weight space does not record, on inputs
    multiplied back by ``input_scales``, the WeightScaler's). ``n_layers``, ``heads``, ``positional``,
    ``layer_embedding``, ``symmetry`` and ``pool`` apply to the graph models (``sign-gnn`` is equivariant to sign flips
    by construction: for it ``"sign"`` changes nothing, and ``"scale"`` adds the ReLU canonical form).
    ``zero_output`` and ``edit_scale`` (learned scales of the edits, starting at this value: per
    layer depth in the graph models, per tensor in the parameter-sharing ones) apply to the
    equivariant readout of both families. ``recompute`` applies to the transformer backbone
    (activation recomputation of its per-edge attention terms: less memory, the same function;
    None: on large batches only). ``tensor_stats``: the graph models' invariant readout also
    reads the ``stat`` baseline's per-tensor statistics (:class:`graphnfn.statistics.TensorStatistics`,
    :data:`graphnfn.statistics.MAX_TENSORS` weight and bias tensors): ``True`` of the values,
    ``"fourier"`` of their ``fourier`` Gaussian Fourier features, the features ``stat`` reads.
    ``dropout``: a regulariser of both families, at training time only: the graph models drop
    entries of every layer's node and edge update, the parameter-sharing models (and ``stat``,
    ``flat-mlp``, ``probe-mlp``) the hidden units of their MLP head, which of their equivariant
    readouts only ``flat-mlp``'s has. ``edge_product``: ``pna`` and ``transformer``'s equivariant
    readout adds a bilinear term of each edge's two end states of this rank
    (:class:`graphnfn.nn.blocks.EdgeProduct`; 0: none).
    """
    check_dropout(dropout)
    readout = readout_name(readout, READOUTS)
    zero_output = zero_output and readout == "equivariant"
    kind = family(name)
    if not learns(name):
        raise ValueError(f"{name} is not a module: it learns nothing (align-linear: graphnfn.paramshare.AlignLinear)")
    if kind == "graph":
        probe = ProbeFeatures(probes=probe_inputs) if probe_inputs is not None else None
        check_tensor_stats(tensor_stats)
        slots = MAX_TENSORS if tensor_stats else 0
        stats_fourier = fourier if tensor_stats == "fourier" else 0
        if name == PROBE_MLP:
            if readout != "invariant":
                raise ValueError("probe-mlp has only an invariant readout: it reads the networks' outputs, not weights")
            model = ProbeMLP(d_out, probe, d_hidden=4 * d_hidden, dropout=dropout)
            model.encoding = f"outputs at {model.probe.n_probes} probes"
            return model
        if edge_product and name in (SIGN_GNN, PROBE_MLP):
            raise ValueError(f"edge_product is a term of pna and transformer's equivariant readout; {name} has none")
        if name == SIGN_GNN:
            model = SignGNN(d_out, readout=readout, d_hidden=d_hidden, n_layers=n_layers, dropout=dropout,
                            fourier=fourier, positional=positional, layer_embedding=layer_embedding, probe=probe,
                            zero_output=zero_output, edit_scale=edit_scale, pool=pool, tensor_stats=slots,
                            stats_fourier=stats_fourier, symmetry=symmetry)
            groups = "sign group, scale canonical" if symmetry == "scale" else "sign group"
            encoding = f"odd-fourier{fourier} ({groups})" if fourier else "raw"
        else:
            model = GraphNFN(d_out, backbone=name, readout=readout,
                             d_hidden=d_hidden, n_layers=n_layers, heads=heads, dropout=dropout, fourier=fourier,
                             positional=positional, layer_embedding=layer_embedding, probe=probe, symmetry=symmetry,
                             zero_output=zero_output, edit_scale=edit_scale, pool=pool, recompute=recompute,
                             tensor_stats=slots, stats_fourier=stats_fourier, edge_product=edge_product)
            encoding = f"fourier{fourier}" if fourier else "raw"
        # tables name every input a row read: probe features are computed from the weights, but are more than them
        model.encoding = encoding + (f" + activations at {probe.n_probes} probes" if probe is not None else "")
        return model
    name = "flat-mlp" if name == "flat-mlp-aug" else name
    if name in paramshare.models.MONOMIAL_MODELS and paramshare.scaling_of(sample.spec) == "scale":
        fourier = 0  # what paramshare.build would fall back to, without its warning: the table's encoding says it
    return paramshare.build(name, sample.spec, d_out, readout, hidden=d_hidden, fourier=fourier,
                            zero_output=zero_output, edit_scale=edit_scale, dropout=dropout, probes=probe_inputs,
                            probe_act_param=probe_act_param, input_scales=input_scales)
