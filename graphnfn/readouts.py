"""What a model's output is attached to, in one vocabulary for both families.

``"invariant"``: one output per network, unchanged by the network's symmetries.
``"equivariant"``: one per weight (per edge of the neuron graph), moved along by them.
``"node"`` (graph models): one per neuron. The graph family's own names for the first
two, ``"graph"`` and ``"edge"`` (where the output lives), are accepted everywhere as
synonyms and stored under the names above.
"""
from __future__ import annotations

SYNONYMS = {"graph": "invariant", "edge": "equivariant"}


def readout_name(readout: str, allowed: tuple[str, ...], caller: str = "") -> str:
    """``readout`` in the canonical vocabulary; ValueError naming ``caller`` unless it is one of ``allowed``."""
    name = SYNONYMS.get(readout, readout)
    if name not in allowed:
        synonyms = ", ".join(f"{k!r} for {v!r}" for k, v in SYNONYMS.items() if v in allowed)
        raise ValueError(f"{caller}readout must be one of {allowed}" + (f" ({synonyms})" if synonyms else "")
                         + f", got {readout!r}")
    return name
