"""The ``graphnfn`` command: convert, inspect and draw checkpoints; predict with a trained model.

    graphnfn convert CKPT -o GRAPH.safetensors   save the neuron graph (load with graphnfn.io.load_graph)
    graphnfn inspect CKPT                        layers, nodes, edges, symmetry group, parameter count
    graphnfn draw CKPT -o FILE.png               a layered drawing (small networks; any image suffix
                                                 matplotlib writes: .png, .pdf, .svg, ...)
    graphnfn predict RUN CKPT [CKPT ...]         a trained model's prediction for each checkpoint
                                                 (--json: one JSON list instead of lines)
    graphnfn --version

CKPT is a .pt/.pth/.safetensors checkpoint, a Hugging Face model directory
(config.json and safetensors weights, read offline) or a graph saved by
``graphnfn convert``. A bare state_dict is read as an MLP; for any other
architecture name the module that holds it:

    --model pkg.module:Class [--model-args '{"channels": 16}']

builds ``Class(**model_args)`` (a function returning an nn.Module works too;
``pkg.module`` is imported from the current directory or the installed packages),
loads the checkpoint's state_dict into it (strictly: every key must match) and
converts the module.

RUN is a run directory of the experiments (its ``best-<model>-seed<n>.pt``) or
such a checkpoint file, as for graphnfn.load_model. ``predict`` prints
``CKPT: class C (probability P)`` for a classifier, ``CKPT: VALUE`` for a
regressor (e.g. a predicted test accuracy).

Errors print one line naming the file or argument and exit with status 1.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from torch import nn

import converters
from converters.hf import is_model_dir

from . import __version__
from .symmetries import describe_symmetries
from .graph import NeuralGraph
from .io import load_graph, save_graph


def _is_saved_graph(path: Path) -> bool:
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return "graphnfn_spec" in (f.metadata() or {})
    except Exception:  # not a readable safetensors file: let the converter report it
        return False


def _model_builder(args) -> Callable[[], nn.Module] | None:
    """What ``--model``/``--model-args`` construct (None without ``--model``), checked before any work."""
    if args.model is None:
        if args.model_args is not None:
            raise ValueError("--model-args needs --model pkg.module:Class")
        return None
    module_name, _, attr = args.model.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--model {args.model!r}: expected pkg.module:Class")
    kwargs = {}
    if args.model_args is not None:
        try:
            kwargs = json.loads(args.model_args)
        except json.JSONDecodeError as err:
            raise ValueError(f"--model-args {args.model_args!r} is not valid JSON: {err}") from None
        if not isinstance(kwargs, dict):
            raise ValueError(f"--model-args {args.model_args!r}: expected a JSON object of keyword arguments")
    cwd = os.getcwd()
    sys.path.insert(0, cwd)  # the user's own modules, as `python -m` finds them
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # not found, or the module failed while importing
        raise ValueError(f"--model {args.model!r}: cannot import {module_name!r}: "
                         f"{type(err).__name__}: {err}") from None
    finally:
        sys.path.remove(cwd)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"--model {args.model!r}: module {module_name!r} has no class or function {attr!r}")

    def build() -> nn.Module:
        try:
            net = factory(**kwargs)
        except Exception as err:
            raise ValueError(f"--model {args.model!r} with --model-args {kwargs}: "
                             f"{type(err).__name__}: {err}") from None
        if not isinstance(net, nn.Module):
            raise ValueError(f"--model {args.model!r} returned a {type(net).__name__}, not an nn.Module")
        return net

    return build


def _listed(keys: list[str]) -> str:
    return str(keys[:6])[:-1] + f", ... ({len(keys)} in all)]" if len(keys) > 6 else str(keys)


def _network(source: str, build: Callable[[], nn.Module] | None) -> nn.Module | NeuralGraph | str:
    """CKPT as the converters take it: a module holding its weights (``--model``), a saved graph, or the path."""
    path = Path(source).expanduser()
    if _is_saved_graph(path):
        if build is not None:
            raise ValueError(f"{source}: a saved graph holds its architecture already; drop --model")
        return load_graph(path)
    if build is None:
        return source
    if is_model_dir(path):
        raise ValueError(f"{source}: a Hugging Face model directory names its architecture in config.json; "
                         "drop --model")
    state_dict = converters.load_checkpoint(path)
    net = build()
    try:
        missing, unexpected = net.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # shapes that do not fit
        raise converters.ConversionError(f"{source}: does not fit --model {type(net).__name__}: {err}") from None
    if missing or unexpected:
        raise converters.ConversionError(
            f"{source}: does not fit --model {type(net).__name__}: missing keys {_listed(missing)}, "
            f"unexpected keys {_listed(unexpected)}")
    return net.eval()


@contextmanager
def _naming(source: str) -> Iterator[None]:
    """Conversion errors of a module built from ``source`` name the file, as those of a path do."""
    try:
        yield
    except converters.ConversionError as err:
        if source in str(err):
            raise
        raise type(err)(f"{source}: {err}") from err


def read_graph(source: str, allow_nonfinite: bool = False,
               build: Callable[[], nn.Module] | None = None) -> NeuralGraph:
    """CKPT's neuron graph (``build``: the ``--model`` constructor)."""
    net = _network(source, build)
    if isinstance(net, NeuralGraph):
        return net
    with _naming(source):
        return converters.to_graph(net, allow_nonfinite=allow_nonfinite)


def _convert(args) -> int:
    g = read_graph(args.checkpoint, args.allow_nonfinite, args.build)
    save_graph(g, args.output)
    print(f"wrote {args.output}: {g.num_nodes} nodes, {g.num_edges} edges")
    return 0


def _inspect(args) -> int:
    g = read_graph(args.checkpoint, args.allow_nonfinite, args.build)
    params = sum(math.prod(e.shape) for e in g.spec.entries if e.kind != "const")
    print(f"{args.checkpoint}: {len(g.spec.entries)} tensors, {params:,} values")
    print(g.summary())
    print("symmetries that keep the function (hidden layers):")
    for line in describe_symmetries(g) or ["none: no hidden neurons"]:
        print(f"  {line}")
    return 0


def _draw(args) -> int:
    from .draw import draw_graph

    g = read_graph(args.checkpoint, args.allow_nonfinite, args.build)
    draw_graph(g, args.output, title=Path(args.checkpoint).name)
    print(f"wrote {args.output}")
    return 0


def _predict(args) -> int:
    from .trained import load_model

    trained = load_model(args.run)
    if trained.readout != "invariant":
        raise ValueError(f"{args.run}: model {trained.name!r} ({trained.task}) has an {trained.readout} readout: "
                         "it outputs weights, not one prediction per network")
    rows = []
    for source in args.checkpoints:
        net = _network(source, args.build)
        if isinstance(net, NeuralGraph) and trained.family != "graph":
            raise ValueError(f"{source}: a saved graph; model {trained.name!r} reads weight spaces: "
                             "pass the checkpoint")
        with _naming(source):
            out = trained.predict([net])[0].float()
        if "classification" in trained.task:
            probs = out.softmax(-1)
            rows.append({"checkpoint": source, "class": int(probs.argmax()), "probability": float(probs.max())})
        else:
            rows.append({"checkpoint": source, "value": out.item() if out.numel() == 1 else out.tolist()})
        if not args.json:
            row = rows[-1]
            print(f"{source}: class {row['class']} (probability {row['probability']:.4f})" if "class" in row
                  else f"{source}: {row['value']}")
    if args.json:
        print(json.dumps(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="graphnfn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"graphnfn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (("convert", _convert, "save the neuron graph of a checkpoint"),
                ("inspect", _inspect, "layers, nodes, edges, symmetry group, parameter count"),
                ("draw", _draw, "a layered drawing of a small network"),
                ("predict", _predict, "a trained model's prediction for each checkpoint"))
    for name, fn, help_text in commands:
        p = sub.add_parser(name, help=help_text)
        if name == "predict":
            p.add_argument("run", help="run directory (or best-*.pt file) of a trained model")
            p.add_argument("checkpoints", nargs="+", metavar="checkpoint")
            p.add_argument("--json", action="store_true", help="print the predictions as one JSON list")
        else:
            p.add_argument("checkpoint")
            p.add_argument("--allow-nonfinite", action="store_true", help="accept NaN/Inf weights")
        if name in ("convert", "draw"):
            p.add_argument("-o", "--output", required=True)
        p.add_argument("--model", metavar="PKG.MODULE:CLASS",
                       help="the architecture of a state_dict that is not an MLP's")
        p.add_argument("--model-args", metavar="JSON", help="keyword arguments of --model, a JSON object")
        p.add_argument("--traceback", action="store_true", help="show the Python traceback of an unexpected error")
        p.set_defaults(fn=fn)
    args = parser.parse_args(argv)
    try:
        try:
            if getattr(args, "output", None) is not None:
                args.output = _checked_output(args.output, args.command)
            args.build = _model_builder(args)
            code = args.fn(args)
        except BrokenPipeError:
            raise  # not bad input: handled below
        except (converters.ConversionError, OSError, ValueError) as err:  # bad input: the message names it
            return _fail(args, _command_line_advice(str(err), args))
        except Exception as err:  # a bug: still one line, unless asked for the traceback
            if args.traceback:
                raise
            return _fail(args, f"unexpected {type(err).__name__} on {_inputs(args)} (please report it; "
                               f"--traceback shows where): {err}")
        sys.stdout.flush()  # a reader that went away shows here at the latest, while it can be handled
        return code
    except BrokenPipeError:
        # `graphnfn inspect X | head -1`: stop quietly. As Python's docs advise, point stdout at
        # devnull so that the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _command_line_advice(message: str, args) -> str:
    """The converters' advice names Python arguments; here it names the command's options."""
    hints = {"pass the nn.Module for other networks": "name the architecture with --model pkg.module:Class"}
    if hasattr(args, "allow_nonfinite"):
        hints["allow_nonfinite=True"] = "--allow-nonfinite"
    for api, option in hints.items():
        message = message.replace(api, option)
    return message


def _inputs(args) -> str:
    return args.checkpoint if hasattr(args, "checkpoint") else " ".join([args.run, *args.checkpoints])


def _checked_output(output: str, command: str) -> str:
    """The output path (``~`` expanded), refused before any work if it cannot be written or its
    suffix names another format than the command writes."""
    path = Path(output).expanduser()
    if path.is_dir():
        raise ValueError(f"output {output!r} is a directory; give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"output directory {str(path.parent)!r} does not exist")
    suffix = path.suffix.lower()
    given = f"not {suffix}" if suffix else "it has no suffix"
    if command == "convert" and suffix != ".safetensors":
        raise ValueError(f"output {output!r}: convert writes a graph file, name it *.safetensors ({given})")
    if command == "draw":
        from matplotlib.backend_bases import FigureCanvasBase

        formats = sorted(FigureCanvasBase.get_supported_filetypes())
        if suffix[1:] not in formats:
            raise ValueError(f"output {output!r}: draw writes an image, name it with one of the suffixes "
                             f"{', '.join('.' + f for f in formats)} ({given})")
    return str(path)


def _fail(args, message: str) -> int:
    """One line on stderr, exit status 1."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"graphnfn {args.command}: error: {line}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
