"""Static INT8 quantisation (onnxruntime.quantization, calibrated on real digits images)
keeps the max subnet's accuracy within 1 point of fp32."""
from __future__ import annotations

import numpy as np
import torch

from nasplat.data import DataConfig, load_data
from nasplat.export import ort_session
from nasplat.hw import load_profile
from nasplat.hw.measure import export_model
from nasplat.space import load_space
from nasplat.supernet import build_supernet

from _hw_helpers import REPO


def _accuracy(data: bytes, x: np.ndarray, y: np.ndarray) -> float:
    sess = ort_session(data, 1)
    name = sess.get_inputs()[0].name
    pred = [int(sess.run(None, {name: x[i:i + 1]})[0].argmax()) for i in range(len(x))]
    return float(np.mean(np.asarray(pred) == y))


def test_int8_max_subnet_accuracy_within_one_point_of_fp32():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # an oversubscribed 2-core machine makes 2 torch threads far slower
    space = load_space(REPO / "search_spaces" / "ofa_mbv3_digits.yaml")
    data = load_data(DataConfig(name="digits", resolution=16), 1)
    arch = space.max_arch()
    net = build_supernet(space).extract(arch)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for epoch in range(3):  # a few epochs of the static max subnet: ~95% on digits
        order = np.random.default_rng(epoch).permutation(len(data.train))
        for x, y, _ in data.batches("train", 64, order, drop_last=True):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    net.eval()
    xv = torch.cat([x for x, _, _ in data.batches("val", 500)]).numpy()
    yv = torch.cat([y for _, y, _ in data.batches("val", 500)]).numpy()
    fp32_prof, int8_prof = load_profile("local-cpu"), load_profile("local-cpu-int8")
    calib = np.concatenate([x.numpy() for x in data.calib_batches(100, int8_prof.quantization.calib_images)])
    shape = [1, 1, 16, 16]
    fp32 = export_model(net, shape, fp32_prof)
    int8 = export_model(net, shape, int8_prof, calib)
    assert int8 != fp32 and len(int8) < len(fp32)  # weights stored as int8
    acc32, acc8 = _accuracy(fp32, xv, yv), _accuracy(int8, xv, yv)
    assert acc32 > 0.85, acc32  # the net learned something, so the comparison means something
    assert abs(acc32 - acc8) <= 0.01, (acc32, acc8)
