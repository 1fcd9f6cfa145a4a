"""Graph models off the CPU: no host-device synchronisation in forward (proved on
the meta device, where any data-dependent host read raises), and, on a machine
with a GPU, CUDA results equal to the CPU's and bf16 autocast within tolerance.
The CUDA tests are skipped where torch sees no GPU (CI and the project's machine
have none); run them there with `python -m pytest tests/test_devices.py`."""
import pytest
import torch
from torch import nn

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


def model(backbone: str, readout: str, probe: bool) -> nn.Module:
    return model_for(backbone, readout, probe).float()


@pytest.mark.parametrize("probe", [False, True])
@pytest.mark.parametrize("backbone", GRAPH_MODELS)
@pytest.mark.parametrize("readout", READOUTS)
def test_forward_never_reads_data_on_the_host(backbone, readout, probe):
    """Every shape in forward comes from Python ints the batch already holds: on the
    meta device tensors have no data, so a .item(), a bool(tensor) or a
    data-dependent shape would raise here (and would sync the host with a GPU)."""
    batch, net = mixed_batch(probe), model(backbone, readout, probe)
    expected = net(batch).shape
    out = net.to("meta")(batch.to("meta"))
    assert out.device.type == "meta" and out.shape == expected


@needs_cuda
@pytest.mark.parametrize("probe", [False, True])
@pytest.mark.parametrize("backbone", GRAPH_MODELS)
@pytest.mark.parametrize("readout", READOUTS)
def test_cuda_matches_cpu_without_syncs(backbone, readout, probe):
    batch, net = mixed_batch(probe), model(backbone, readout, probe)
    ref = net(batch)
    net, batch = net.cuda(), batch.cuda()
    net(batch)  # first call: lazy CUDA initialisation may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = net(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
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
