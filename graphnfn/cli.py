"""The ``graphnfn`` command: convert, inspect and draw checkpoints.

    graphnfn convert CKPT -o GRAPH.safetensors   save the neuron graph (load with graphnfn.io.load_graph)
    graphnfn inspect CKPT                        layers, nodes, edges, symmetry group, parameter count
    graphnfn draw CKPT -o FILE.png               a layered drawing (small networks)

CKPT is a .pt/.pth/.safetensors checkpoint (a state_dict of an MLP), a Hugging
Face model directory (config.json and safetensors weights, read offline) or a
graph saved by ``graphnfn convert``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import converters

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


def read_graph(source: str, allow_nonfinite: bool = False) -> NeuralGraph:
    path = Path(source).expanduser()
    return load_graph(path) if _is_saved_graph(path) else converters.to_graph(path, allow_nonfinite=allow_nonfinite)


def _convert(args) -> int:
    g = read_graph(args.checkpoint, args.allow_nonfinite)
    save_graph(g, args.output)
    print(f"wrote {args.output}: {g.num_nodes} nodes, {g.num_edges} edges")
    return 0


def _inspect(args) -> int:
    g = read_graph(args.checkpoint, args.allow_nonfinite)
    params = sum(math.prod(e.shape) for e in g.spec.entries if e.kind != "const")
    print(f"{args.checkpoint}: {len(g.spec.entries)} tensors, {params:,} values")
    print(g.summary())
    print("symmetries that keep the function (hidden layers):")
    for line in describe_symmetries(g) or ["none: no hidden neurons"]:
        print(f"  {line}")
    return 0


def _draw(args) -> int:
    from .draw import draw_graph

    g = read_graph(args.checkpoint, args.allow_nonfinite)
    draw_graph(g, args.output, title=Path(args.checkpoint).name)
    print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="graphnfn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (("convert", _convert, "save the neuron graph of a checkpoint"),
                ("inspect", _inspect, "layers, nodes, edges, symmetry group, parameter count"),
                ("draw", _draw, "a layered drawing of a small network"))
    for name, fn, help_text in commands:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("checkpoint")
        if name != "inspect":
            p.add_argument("-o", "--output", required=True)
        p.add_argument("--allow-nonfinite", action="store_true", help="accept NaN/Inf weights")
        p.add_argument("--traceback", action="store_true", help="show the Python traceback of an unexpected error")
        p.set_defaults(fn=fn)
    args = parser.parse_args(argv)
    try:
        if getattr(args, "output", None) is not None:
            args.output = _checked_output(args.output)
        return args.fn(args)
    except (converters.ConversionError, OSError, ValueError) as err:  # bad input: the message names it
        return _fail(args, str(err))
    except Exception as err:  # a bug: still one line, unless asked for the traceback
        if args.traceback:
            raise
        return _fail(args, f"unexpected {type(err).__name__} on {args.checkpoint} (please report it; "
                           f"--traceback shows where): {err}")


def _checked_output(output: str) -> str:
    """The output path (``~`` expanded), refused before any work if it cannot be written."""
    path = Path(output).expanduser()
    if path.is_dir():
        raise ValueError(f"output {output!r} is a directory; give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"output directory {str(path.parent)!r} does not exist")
    return str(path)


def _fail(args, message: str) -> int:
    """One line on stderr, exit status 1."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"graphnfn {args.command}: error: {line}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
