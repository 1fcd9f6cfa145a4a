"""Which activation a module or a function is (and its parameter)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from graphnfn.graph import Activation
from graphnfn.modules import Sine

MODULE_ACTS: dict[type, Callable[[nn.Module], tuple[Activation, float]]] = {
    nn.ReLU: lambda m: (Activation.RELU, 0.0),
    nn.LeakyReLU: lambda m: (Activation.LEAKY_RELU, float(m.negative_slope)),
    nn.GELU: lambda m: (Activation.GELU, float(m.approximate == "tanh")),
    nn.Tanh: lambda m: (Activation.TANH, 0.0),
    nn.Sigmoid: lambda m: (Activation.SIGMOID, 0.0),
    nn.SiLU: lambda m: (Activation.SILU, 0.0),
    nn.ELU: lambda m: (Activation.ELU, float(m.alpha)),
    nn.Softplus: lambda m: (Activation.SOFTPLUS, float(m.beta)),
    nn.Softmax: lambda m: (Activation.SOFTMAX, 0.0),
    nn.LogSoftmax: lambda m: (Activation.LOG_SOFTMAX, 0.0),
    Sine: lambda m: (Activation.SINE, float(m.w0)),
}

#: functions and tensor methods (by name, as torch.fx records them)
FUNCTION_ACTS: dict[object, Activation] = {
    F.relu: Activation.RELU, torch.relu: Activation.RELU, "relu": Activation.RELU,
    F.leaky_relu: Activation.LEAKY_RELU,
    F.gelu: Activation.GELU,
    torch.tanh: Activation.TANH, F.tanh: Activation.TANH, "tanh": Activation.TANH,
    torch.sigmoid: Activation.SIGMOID, F.sigmoid: Activation.SIGMOID, "sigmoid": Activation.SIGMOID,
    F.silu: Activation.SILU, F.elu: Activation.ELU, F.softplus: Activation.SOFTPLUS,
    torch.sin: Activation.SINE, "sin": Activation.SINE,
    F.softmax: Activation.SOFTMAX, torch.softmax: Activation.SOFTMAX, "softmax": Activation.SOFTMAX,
    F.log_softmax: Activation.LOG_SOFTMAX, torch.log_softmax: Activation.LOG_SOFTMAX,
    "log_softmax": Activation.LOG_SOFTMAX,
}
#: keyword and default value of the functional activations' parameters
FUNCTION_ACT_PARAM = {Activation.LEAKY_RELU: ("negative_slope", 0.01), Activation.ELU: ("alpha", 1.0),
                      Activation.SOFTPLUS: ("beta", 1.0), Activation.GELU: ("approximate", "none")}


def module_activation(module: nn.Module) -> tuple[Activation, float] | None:
    """(activation, parameter) of an activation module, None for other modules."""
    read = MODULE_ACTS.get(type(module))
    return None if read is None else read(module)


def function_activation(fn: object, value=None) -> tuple[Activation, float] | None:
    """(activation, parameter) of an activation function; ``value`` is the
    parameter as passed (None: the function's default)."""
    kind = FUNCTION_ACTS.get(fn)
    if kind is None:
        return None
    name, default = FUNCTION_ACT_PARAM.get(kind, ("", 0.0))
    value = default if value is None else value
    if kind is Activation.GELU:
        return kind, float(value == "tanh")
    return kind, float(value) if name else 0.0
