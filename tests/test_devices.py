"""Graph models off the CPU: no host-device synchronisation in forward (proved on
the meta device, where any data-dependent host read raises), and, on a machine
with a GPU, CUDA results equal to the CPU's and bf16 autocast within tolerance.
The CUDA tests are skipped where torch sees no GPU (CI and the project's machine
have none); run them there with `python -m pytest tests/test_devices.py`."""
import traceback
import warnings

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

import converters
import graphnfn
from test_models import GRAPH_MODELS, READOUTS, model_for

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def mixed_batch(probe: bool) -> graphnfn.NeuralGraph:
    """An MLP and a SIREN, and unless probe features are asked for (they run
    vector-input networks only), a CNN and a transformer block, in one batch."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)),
            nn.Sequential(nn.Linear(2, 16), graphnfn.Sine(), nn.Linear(16, 1))]
    if not probe:
        nets += [nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                               nn.Flatten(), nn.Linear(4, 10)),
                 nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)]
    return graphnfn.collate([converters.to_graph(net) for net in nets])


class HostTensors(TorchFunctionMode):
    """Records where (our file:line) forward hands host data to a meta-device op: a list
    or host tensor as an index, a torch.tensor made from Python data, or a host tensor
    of more than one value beside meta ones. (A dispatch mode would not see the first:
    torch turns an index list into a device tensor below the dispatcher.)"""

    def __init__(self):
        super().__init__()
        self.sites = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves = tree_leaves((args, kwargs))
        tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
        on_meta = any(t.device.type == "meta" for t in tensors)
        host = any(t.device.type == "cpu" and t.numel() > 1 for t in tensors)
        index = func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and \
            any(isinstance(i, (list, tuple)) for i in (args[1] if isinstance(args[1], tuple) else (args[1],)))
        made = func in (torch.tensor, torch.as_tensor) and not isinstance(args[0], torch.Tensor)
        if made or (on_meta and (host or index)):
            ours = [f for f in traceback.extract_stack() if "graphnfn" in f.filename]
            self.sites.add(f"{ours[-1].filename}:{ours[-1].lineno}" if ours else str(func))
        return func(*args, **kwargs)


#: every readout, and the invariant one also pooling each layer depth apart
READOUT_POOLS = [(readout, "graph") for readout in READOUTS] + [("invariant", "layer")]


def model(backbone: str, readout: str, probe: bool, pool: str = "graph") -> nn.Module:
    return model_for(backbone, readout, probe, pool=pool).float()


@pytest.mark.parametrize("probe", [False, True])
@pytest.mark.parametrize("backbone", GRAPH_MODELS)
@pytest.mark.parametrize("readout,pool", READOUT_POOLS)
def test_forward_never_reads_data_on_the_host(backbone, readout, pool, probe):
    """Every shape in forward comes from Python ints the batch already holds: on the
    meta device tensors have no data, so a .item(), a bool(tensor) or a
    data-dependent shape would raise here (and would sync the host with a GPU).
    Nor does forward copy host tensors to the device (a list used as an index, a
    torch.tensor made in forward): on a GPU such a copy from pageable memory
    blocks the host too."""
    batch, net = mixed_batch(probe), model(backbone, readout, probe, pool)
    expected = net(batch).shape
    net, batch = net.to("meta"), batch.to("meta")
    with HostTensors() as seen:
        out = net(batch)
    assert out.device.type == "meta" and out.shape == expected
    assert not seen.sites, f"forward moves host tensors to the device at {seen.sites}"


@needs_cuda
@pytest.mark.parametrize("probe", [False, True])
@pytest.mark.parametrize("backbone", GRAPH_MODELS)
@pytest.mark.parametrize("readout,pool", READOUT_POOLS)
def test_cuda_matches_cpu_without_syncs(backbone, readout, pool, probe):
    batch, net = mixed_batch(probe), model(backbone, readout, probe, pool)
    ref = net(batch)
    net, batch = net.cuda(), batch.cuda()
    net(batch)  # first call: lazy CUDA initialisation may sync
    # "warn", not "error": one run names every line that syncs (a lent GPU is lent for minutes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = net(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sorted({f"{w.filename}:{w.lineno}" for w in caught if "synchronizing CUDA operation" in str(w.message)})
    assert not syncs, f"forward syncs the host with the GPU at {syncs}"
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)


@needs_cuda
@pytest.mark.parametrize("backbone", GRAPH_MODELS)
def test_cuda_bf16_autocast_trains(backbone):
    batch, net = mixed_batch(False).cuda(), model(backbone, "invariant", False).cuda().train()
    ref = net(batch)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = net(batch)
    torch.testing.assert_close(low.float(), ref, rtol=0.1, atol=0.1)
    low.float().square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
