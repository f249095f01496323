"""C8: a model and its optimiser saved at step t and restored in a fresh Python process give
bit-identical predictions, weights and state on the same future inputs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

from psann_stream import StatefulNet, predict_sequence_online

CHILD = textwrap.dedent(
    """
    import sys, torch
    from psann_stream import StateConfig, StatefulNet, predict_sequence_online
    torch.set_num_threads(1)
    ck = torch.load(sys.argv[1], weights_only=True)
    net = StatefulNet(3, hidden=(8, 8), state=StateConfig.from_mapping(ck["config"]))
    net.load_state_dict(ck["model"])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    opt.load_state_dict(ck["optim"])
    torch.set_rng_state(ck["rng"])
    pred = predict_sequence_online(net, ck["x"], ck["y"], optimizer=opt, reset=False)
    torch.save({"pred": pred, "model": net.state_dict(), "noise": torch.rand(3)}, sys.argv[2])
    """
)


def test_checkpoint_restored_in_a_fresh_process_gives_bit_identical_future(tmp_path):
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(60, 2, 3, generator=g), torch.randn(60, 2, 1, generator=g)
    net = StatefulNet(3, hidden=(8, 8), seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    predict_sequence_online(net, x[:30], y[:30], optimizer=opt)
    path, out = tmp_path / "ck.pt", tmp_path / "out.pt"
    torch.save(
        {
            "model": net.state_dict(),
            "optim": opt.state_dict(),
            "config": net.state_config.to_dict(),
            "rng": torch.get_rng_state(),
            "x": x[30:],
            "y": y[30:],
        },
        path,
    )
    continued = predict_sequence_online(net, x[30:], y[30:], optimizer=opt, reset=False)
    noise = torch.rand(3)
    subprocess.run([sys.executable, "-c", CHILD, str(path), str(out)], check=True, timeout=120)
    child = torch.load(out, weights_only=True)
    assert torch.equal(child["pred"], continued)
    assert torch.equal(child["noise"], noise)
    mine = net.state_dict()
    assert mine.keys() == child["model"].keys()
    assert all(torch.equal(mine[k], child["model"][k]) for k in mine)
