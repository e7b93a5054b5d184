"""Strategy ``pada`` (PA&DA): data and path importance sampling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nasplat.data import DataBundle, TensorData
from nasplat.supernet.attribution import ROUTES_THROUGH_ALL, choice_parameters, gradient_norms
from nasplat.checkpoint import load_checkpoint
from nasplat.train.engine import make_trainer
from nasplat.train.strategies import STRATEGIES, StepInfo

from _pada_helpers import one_thread  # noqa: F401  (autouse: 1 torch thread)
from _pada_helpers import TINY_SPACE, tiny_ctx, tiny_data


def planted_hard_data(n: int = 320, frac: float = 0.2, seed: int = 0) -> tuple[DataBundle, np.ndarray]:
    """``n`` digits of which a ``frac`` subset has shuffled (unlearnable) labels."""
    data = tiny_data()
    x, y = data.train.x[:n], data.train.y[:n].clone()
    rng = np.random.default_rng(seed)
    hard = np.sort(rng.choice(n, int(frac * n), replace=False))
    y[hard] = (y[hard] + torch.as_tensor(rng.integers(1, 10, len(hard)))) % 10  # always wrong
    return DataBundle(TensorData(x, y), data.val, data.calib, 10, 1, data.resolution), hard


def test_data_distribution_shifts_toward_the_hard_subset(tmp_path):
    data, hard = planted_hard_data()
    # a near-fixed network (one resolution, depth 1) so it fits the clean labels in seconds
    E = 16
    ctx = tiny_ctx(tmp_path, "pada", epochs=E, data=data, lr=0.3, label_smoothing=0.0,
                   space_changes={"resolutions": [8], "stages": [TINY_SPACE["stages"][0] | {"depths": [1]}]})
    trainer = make_trainer(ctx, 32)
    strat = trainer.strategy
    orders = {}
    real_order = strat.epoch_order

    def recording_order(phase, epoch, n):
        orders[epoch] = real_order(phase, epoch, n)
        return orders[epoch]

    strat.epoch_order = recording_order
    trainer.fit()
    n = len(data.train)
    is_hard = np.zeros(n, bool)
    is_hard[hard] = True
    share = is_hard.mean()
    # g: loss-gradient norms are larger on the wrong labels
    g = strat.g.numpy()
    assert g[is_hard].mean() > 1.5 * g[~is_hard].mean()
    # epoch 0 is the plain pass (each sample once); later epochs resample with replacement
    assert sorted(orders[0]) == list(range(n))
    assert len(set(orders[E - 1].tolist())) < n
    # the drawn indices over-represent the hard subset in the late epochs (tau >= 0.5)
    late = np.concatenate([orders[e] for e in range(E // 2, E)])
    assert is_hard[late].mean() > 1.1 * share
    # and the next-epoch distribution q puts more mass on it than its share
    q = strat._data_probs((E - 1) / E)
    assert q[is_hard].mean() > 1.3 * q[~is_hard].mean()
    assert q[is_hard].sum() > 1.25 * share
    assert q.sum() == pytest.approx(1.0)
    # with data sampling off the order stays a permutation
    ctx2 = tiny_ctx(tmp_path / "b", "pada", epochs=E, data=data, options={"data_sampling": False},
                    space_changes=ctx.space.config.model_dump())
    strat2 = STRATEGIES.get("pada")(ctx2, STRATEGIES.get("pada").parse_options({"data_sampling": False}))
    strat2.load_state_dict(strat.state_dict())
    strat2.begin_epoch(0, E - 1)
    assert sorted(strat2.epoch_order(0, E - 1, n)) == list(range(n))


def test_path_distribution_shifts_toward_larger_gradient_norms(tmp_path):
    """Real forward/backward steps, with the gradients of kernel 5 in block (0, 0)
    scaled up 10x (a planted choice value with larger gradient norms)."""
    ctx = tiny_ctx(tmp_path, "pada", epochs=4)
    strat = STRATEGIES.get("pada")(ctx, STRATEGIES.get("pada").parse_options({}))
    net = strat.supernet
    strat.begin_epoch(0, 0)
    assert strat.path_distribution("k0_0") == {3: 0.5, 5: 0.5}
    batches = ctx.data.batches("train", 32)
    for s in range(12):
        x, y, idx = next(batches)
        arch = strat.draw(StepInfo(0, 0, s, s)).replace(k0_0=[3, 5][s % 2])
        net.zero_grad(set_to_none=True)
        net.set_active(arch)
        out = net(x)
        torch.nn.functional.cross_entropy(out, y).backward()
        if arch["k0_0"] == 5:
            for p in net.stages[0][0].dw.parameters():
                if p.grad is not None:
                    p.grad.mul_(10.0)
        strat.after_backward(arch, out.detach(), y, idx)
    strat.end_epoch(0, 0)
    G = strat.path_importance("k0_0")
    assert G[5] > 3 * G[3] > 0
    strat.begin_epoch(0, 2)  # tau = 0.5
    p = strat.path_distribution("k0_0")
    assert p[5] == pytest.approx(0.5 * G[5] / (G[3] + G[5]) + 0.25)
    assert p[5] > 0.6 > 0.4 > p[3]
    # the resolution choice has no weights of its own; it is still scored (not G = 0)
    assert all(v > 0 for v in strat.path_importance("r").values())
    assert sum(strat.path_distribution("r").values()) == pytest.approx(1.0)
    # and draws follow p: kernel 5 is drawn more often in block (0, 0)
    draws = [strat.draw(StepInfo(0, 2, s, 0))["k0_0"] for s in range(400)]
    assert draws.count(5) / 400 == pytest.approx(p[5], abs=0.08)


def test_attribution_covers_active_choices_with_the_weights_they_use(tmp_path):
    ctx = tiny_ctx(tmp_path, "pada")
    strat = STRATEGIES.get("pada")(ctx, STRATEGIES.get("pada").parse_options({}))
    net, space = strat.supernet, ctx.space
    arch = space.arch({**space.max_arch(), "d1": 1, "k0_1": 3, "e0_0": 2})
    groups = choice_parameters(net, arch)
    assert set(groups) == space.active(arch) | {ROUTES_THROUGH_ALL}
    assert "k1_1" not in groups  # stage 1 has depth 1: its second block is inactive
    ids = {id(t) for t in groups["k0_1"]}
    assert id(net.stages[0][1].dw.weight) in ids and id(net.stages[0][0].dw.weight) not in ids
    x, y, _ = next(ctx.data.batches("train", 16))
    net.set_active(arch)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    norms = gradient_norms(groups)
    assert all(v > 0 for v in norms.values())
    assert norms[ROUTES_THROUGH_ALL] >= max(v for k, v in norms.items() if k != ROUTES_THROUGH_ALL) - 1e-9
    # the norm is over what the value used: a 3x3 kernel leaves the 5x5 rim without gradient
    w = net.stages[0][1].dw.weight.grad
    assert w[:, :, 0].abs().sum() == 0 and w[:, :, 1:4, 1:4].abs().sum() > 0


def test_importance_weights_and_state_roundtrip(tmp_path):
    ctx = tiny_ctx(tmp_path, "pada", epochs=2, options={"importance_weights": True})
    trainer = make_trainer(ctx, 64)
    trainer.fit()
    strat = trainer.strategy
    assert strat.options.importance_weights
    state, _ = load_checkpoint(tmp_path / "supernet" / "last.safetensors")
    s = state["strategy"]
    assert torch.equal(s["g"], strat.g) and torch.equal(s["G"], strat.G)
    assert (s["g_known"] > 0).all()  # epoch 0 saw every sample
    fresh = STRATEGIES.get("pada")(ctx, strat.options)
    fresh.load_state_dict(s)
    fresh.begin_epoch(0, 1)
    strat.begin_epoch(0, 1)
    np.testing.assert_array_equal(fresh.q, strat.q)
    np.testing.assert_array_equal(fresh.p, strat.p)
    assert fresh.epoch_order(0, 1, len(ctx.data.train)).tolist() == strat.epoch_order(0, 1, len(ctx.data.train)).tolist()
    # with weights on, the loss of a batch is the IW-weighted mean
    x, y, idx = next(ctx.data.batches("train", 16))
    arch = fresh.draw(StepInfo(0, 1, 0, 0))
    fresh.supernet.set_active(arch)
    out = fresh.supernet(x)
    plain = torch.nn.functional.cross_entropy(out, y, label_smoothing=ctx.cfg.label_smoothing, reduction="none")
    w = 1.0 / (len(ctx.data.train) * fresh.q[idx.numpy()])
    path_w = np.prod([1.0 / (len(ctx.space.param(c).choices) * fresh.path_distribution(c)[arch[c]])
                      for c in ctx.space.active(arch)])
    expected = float((plain.detach() * torch.as_tensor(w, dtype=plain.dtype)).mean()) * path_w
    assert float(fresh.loss(out, y, idx, arch).detach()) == pytest.approx(expected, rel=1e-5)
    assert path_w != pytest.approx(1.0)  # p is no longer uniform after one epoch
