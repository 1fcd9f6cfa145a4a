"""The ``align-linear`` sanity baseline: match every network's hidden neurons to one
reference network, then fit a linear model on the aligned, flattened weights.

What it is for: a zoo in which every network is a relabelled copy of one solution (the
digits ``shared-permuted`` SIREN zoo) is a permutation puzzle. Undoing the relabelling
is all a model needs there, and this baseline does exactly that without learning
anything about weights. If it wins (or ties the learned models), the zoo measures neuron
matching, not learning on weights; on zoos of independently initialised networks it
stays near chance (digits SIRENs, test accuracy: 95.8 % shared-permuted, 12.2 %
independent, chance 10 %). It sits in every results table so a reader can tell which kind of
zoo a column comes from.

Matching (:func:`align`). The aligned network is the relabelling of the network's
hidden neurons that maximises the Frobenius inner product
``<flatten(aligned), flatten(reference)>``, all channels and kernel entries included.
Over a full permutation the sum of squared norms does not change, so this is also the
relabelling of least squared distance to the reference. Input and output neurons (and the
residual width of a transformer) never move. The maximisation runs one permutation at a time,
each an exact assignment problem (``scipy.optimize.linear_sum_assignment``) with the others
held fixed:

1. a forward pass from the input: hidden layer s is matched on its incoming weights (their
   columns already permuted by layer s - 1's matching) and biases, plus its outgoing weights
   when the next layer is the output layer, which never moves;
2. optionally (``rounds``, default 0), sweeps of weight matching (Ainsworth et al., "Git
   Re-Basin", 2023): every hidden layer is re-matched on incoming and outgoing weights with
   both neighbours' permutations fixed. Each step maximises over one layer exactly, so the
   inner product never decreases; a sweep that changes no permutation ends the loop.

Why this default: on the digits shared-permuted SIREN zoo (test split), the forward pass
gives 95.8 % test accuracy; matching on incoming weights only (without the output layer's
fixed columns) gives 74 %, and 3 sweeps of weight matching on top gave 94.5 % on the
RMS-scaled weights the experiments feed (95.6 % either way on raw weights): in scaled
weights the 32 x 32 middle layer, mostly training drift, outweighs the first and last
layers' evidence once it enters the score from both sides.

A relabelled copy of the reference is recovered exactly by step 1: the first layer's
columns are input neurons, which never move, so each layer's true permutation makes the
inner product the sum of squared norms, its maximum (Cauchy-Schwarz), reached by no
other permutation unless two neurons are identical. Transformer blocks
(:class:`AttentionWeightSpace`): per block, the heads permute as blocks (matched on their
query, key, value and output matrices together) and the MLP's hidden neurons (matched on
W_a's column, b_a and W_b's row); both sides of each are fixed, so one assignment each.
Only permutations are undone: sign flips (odd activations), positive scalings (ReLU) and
the GL(d_k) freedom inside a head are not.

Cost: per hidden layer of n neurons with F incoming and outgoing weights per neuron, a
[B, n, n] score (B n^2 F multiply-adds) and B assignments of O(n^3), times 1 + the sweeps
run (timings: docs/comparison.md).
"""
from __future__ import annotations

import copy
import itertools
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.linear_model import LogisticRegression, Ridge
from torch import Tensor

from graphnfn.training import accuracy, regression_metrics

from ..spaces import AttentionWeightSpace, WeightSpace, flatten, tensors

#: default refinement sweeps of weight matching after the forward pass (see the module docstring)
ROUNDS = 0


class _Axis(NamedTuple):
    """One tensor dim that a permutable neuron set reorders: ``getattr(space, field)[index]``'s dim ``dim``."""

    field: str
    index: int
    dim: int


def _neuron_sets(space) -> list[list[_Axis]]:
    """The permutable neuron sets of ``space``, in matching order, each as the tensor dims it reorders."""
    if isinstance(space, AttentionWeightSpace):
        sets = []
        for i in range(space.num_blocks):
            sets.append([_Axis(f, i, 2) for f in ("query", "key", "value", "out")])  # heads, as blocks
            sets.append([_Axis("mlp_in", i, 3), _Axis("mlp_in_bias", i, 2), _Axis("mlp_out", i, 2)])
        return sets
    if isinstance(space, WeightSpace):  # hidden neuron layer s: rows of W_{s-1}, b_{s-1}, columns of W_s
        return [[_Axis("weights", s - 1, 2), _Axis("biases", s - 1, 2), _Axis("weights", s, 3)]
                for s in range(1, len(space.weights))]
    raise TypeError(f"align: expected a WeightSpace (MLP/CNN) or an AttentionWeightSpace (transformer blocks), "
                    f"got {type(space).__name__}")


def _permute(t: Tensor, perm: Tensor, dim: int) -> Tensor:
    """Per network b, ``out[b, ..., k, ...] = t[b, ..., perm[b, k], ...]`` along ``dim``. t [B, ...], perm [B, n]."""
    shape = [1] * t.dim()
    shape[0], shape[dim] = perm.shape
    return torch.take_along_dim(t, perm.reshape(shape), dim)


def _match(ref_feats: Tensor, feats: Tensor) -> Tensor:
    """The relabelling that maximises the summed inner product with the reference.

    ref_feats [1, n, F], feats [B, n, F] -> perm [B, n]: reference neuron k gets the
    network's neuron perm[b, k]."""
    score = (ref_feats @ feats.transpose(1, 2)).double().cpu().numpy()  # [B, n_ref, n]
    return torch.from_numpy(np.stack([linear_sum_assignment(s, maximize=True)[1] for s in score])).to(feats.device)


def align(space, reference, rounds: int = ROUNDS):
    """Relabel the hidden neurons of every network in ``space`` to best match ``reference``.

    ``space``: a WeightSpace (weights[l] [B, C, n_out, n_in, *kernel], biases[l] [B, C, n_out])
    or an AttentionWeightSpace; ``reference``: the same spec, channels and type with batch 1.
    ``rounds``: weight-matching sweeps after the forward pass (0: the forward pass only).
    Returns the same container with permuted tensors (and any other field of ``space`` kept):
    every network computes the same function as before. Matching procedure: module docstring.
    """
    sets = _neuron_sets(space)
    if type(reference) is not type(space) or reference.batch_size != 1:
        raise ValueError(f"align: the reference must be one {type(space).__name__} (batch 1), got "
                         f"{type(reference).__name__} with batch {reference.batch_size}")
    want, got = ([tuple(t.shape[1:]) for t in tensors(s)] for s in (space, reference))
    if got != want:
        raise ValueError(f"align: the reference's tensors have shapes {got} ([C, ...]), the networks' {want}")
    axes_of: dict[tuple[str, int], list[tuple[int, int]]] = {}  # tensor -> its (dim, neuron set) pairs
    for s, members in enumerate(sets):
        for a in members:
            axes_of.setdefault((a.field, a.index), []).append((a.dim, s))
    perms: list[Tensor | None] = [None] * len(sets)  # None: not matched yet

    def tensor(container, key: tuple[str, int]) -> Tensor:
        return getattr(container, key[0])[key[1]]

    def permuted(key: tuple[str, int], skip: int | None = None) -> Tensor | None:
        """The network tensor under every neuron set's permutation but ``skip``'s; None if one is unmatched."""
        t = tensor(space, key)
        for dim, s in axes_of[key]:
            if s != skip:
                if perms[s] is None:
                    return None
                t = _permute(t, perms[s], dim)
        return t

    def rematch(s: int) -> Tensor:
        ref_feats, feats = [], []
        for a in sets[s]:
            t = permuted((a.field, a.index), skip=s)
            if t is not None:  # one row of features per neuron of the set: [B, n, rest]
                ref_feats.append(tensor(reference, (a.field, a.index)).to(t).movedim(a.dim, 1).flatten(2))
                feats.append(t.movedim(a.dim, 1).flatten(2))
        return _match(torch.cat(ref_feats, 2), torch.cat(feats, 2))

    for s in range(len(sets)):  # forward pass: what is already matched (or never moves)
        perms[s] = rematch(s)
    for _ in range(rounds):  # weight matching: both sides, until a sweep changes nothing
        changed = False
        for s in range(len(sets)):
            new = rematch(s)
            changed |= not torch.equal(new, perms[s])
            perms[s] = new
        if not changed:
            break
    return space._replace(**{f: tuple(permuted((f, i)) if (f, i) in axes_of else t
                                      for i, t in enumerate(getattr(space, f)))
                             for f in {a.field for members in sets for a in members}})


class AlignLinear:
    """The ``align-linear`` baseline: :func:`align` every network to one reference training
    network, flatten (:func:`graphnfn.paramshare.flatten`), standardise the features with
    the training set's mean and standard deviation, and fit a linear model:
    ``LogisticRegression(C=1/strength)`` (``kind="classification"``, targets [B] class ids)
    or ``Ridge(alpha=strength)`` (``kind="regression"``, targets [B] floats), one per
    regularisation strength of ``grid``; the best on the validation batches (accuracy,
    Kendall tau; ties go to the earlier strength) is kept. The test split is never seen.

    The reference is the first training network: in a one-basin zoo every member is as good a
    template as any, and on independently initialised networks no single template makes
    the weights comparable. ``align=False`` fits the same linear model on the unaligned
    weights (the ablation that shows what matching buys). ``rounds`` goes to :func:`align`.

    After :meth:`fit`: ``strength`` (the chosen one), ``val_scores`` ({strength: val score}),
    ``num_parameters`` (coefficients + intercepts), ``reference`` (batch-1 container).
    """

    KINDS = ("classification", "regression")

    def __init__(self, kind: str = "classification", grid: tuple[float, ...] = (100.0, 10.0, 1.0, 0.1, 0.01),
                 rounds: int = ROUNDS, align: bool = True, max_iter: int = 1000):
        if kind not in self.KINDS:
            raise ValueError(f"AlignLinear: kind must be one of {self.KINDS}, got {kind!r}")
        if not grid or min(grid) <= 0:
            raise ValueError(f"AlignLinear: grid needs at least one positive regularisation strength, got {grid}")
        self.kind, self.grid, self.rounds, self.align, self.max_iter = kind, tuple(grid), rounds, align, max_iter
        self.model = None

    def _features(self, space) -> np.ndarray:
        """[B, C * entries] float64 features of a batch, before standardisation."""
        if self.align:
            space = align(space, self.reference, self.rounds)
        return flatten(space).double().cpu().numpy()

    def _collect(self, batches) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for space, y in batches:
            xs.append(self._features(space))
            ys.append(y.reshape(-1).cpu().numpy())
        if not xs:
            raise ValueError("AlignLinear.fit: a split yields no batches")
        return np.concatenate(xs), np.concatenate(ys)

    def _score(self, model, x: np.ndarray, y: np.ndarray) -> float:
        pred = self._predict_features(model, x)
        if self.kind == "classification":
            return accuracy(pred, torch.from_numpy(y))["accuracy"]
        return regression_metrics(pred, torch.from_numpy(y))["tau"]

    def fit(self, train, val) -> "AlignLinear":
        """``train``, ``val``: iterables of ``(space, targets [B])`` batches
        (:func:`graphnfn.zoo.weight_space_loader`). Returns self."""
        batches = iter(train)  # one pass: a generator of batches is fine
        first = next(batches, None)
        if first is None:
            raise ValueError("AlignLinear.fit: the training split yields no batches")
        self.reference = first[0].map(lambda t: t[:1])
        x, y = self._collect(itertools.chain([first], batches))
        x_val, y_val = self._collect(val)
        self.mean = x.mean(0)
        self.scale = np.where(x.std(0) > 0, x.std(0), 1.0)  # constant features stay zero
        x, x_val = (x - self.mean) / self.scale, (x_val - self.mean) / self.scale
        if self.kind == "classification":
            self.num_classes = int(y.max()) + 1
            # each strength starts from the previous one's solution (the default grid weakens step by step)
            estimator = LogisticRegression(max_iter=self.max_iter, warm_start=True)
        else:
            estimator = Ridge()
        self.val_scores: dict[float, float] = {}
        best = None
        for strength in self.grid:
            estimator.set_params(**({"C": 1.0 / strength} if self.kind == "classification" else {"alpha": strength}))
            estimator.fit(x, y)
            self.val_scores[strength] = self._score(estimator, x_val, y_val)
            if best is None or self.val_scores[strength] > self.val_scores[best[1]]:
                best = copy.deepcopy(estimator), strength
        self.model, self.strength = best
        return self

    @property
    def num_parameters(self) -> int:
        if self.model is None:
            raise RuntimeError("AlignLinear: call fit first")
        return int(self.model.coef_.size + np.size(self.model.intercept_))

    def _predict_features(self, model, x: np.ndarray) -> Tensor:
        if self.kind == "regression":
            return torch.from_numpy(model.predict(x)).float().reshape(-1, 1)
        out = torch.full((len(x), self.num_classes), float("-inf"))  # classes never seen in training: -inf
        out[:, torch.from_numpy(model.classes_.astype(np.int64))] = torch.from_numpy(model.predict_log_proba(x)).float()
        return out

    def predict(self, space) -> Tensor:
        """A batch of networks -> [B, num_classes] log-probabilities (classification; column c
        is class id c) or [B, 1] predictions (regression): what ``accuracy`` and
        ``regression_metrics`` of :mod:`graphnfn.training` take."""
        if self.model is None:
            raise RuntimeError("AlignLinear: call fit before predict")
        return self._predict_features(self.model, (self._features(space) - self.mean) / self.scale)
