"""Strategy ``pada`` (PA&DA): data and path importance sampling, as the official code."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nasplat.checkpoint import load_checkpoint
from nasplat.data import DataBundle, DataConfig, TensorData, load_data
from nasplat.paths import SHIPPED_SPACES
from nasplat.space import load_space
from nasplat.supernet.attribution import choice_groups, choice_parameters, gradient_norm_sums
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


def recording(trainer):
    """Record each epoch's order and the per-sample scores ``g`` before they are reset."""
    strat = trainer.strategy
    orders, scores = {}, {}
    real_order, real_end = strat.epoch_order, strat.end_epoch

    def order(phase, epoch, n):
        orders[epoch] = real_order(phase, epoch, n)
        return orders[epoch]

    def end(phase, epoch):
        scores[epoch] = strat.g.clone().numpy()
        return real_end(phase, epoch)

    strat.epoch_order, strat.end_epoch = order, end
    return orders, scores


def test_data_distribution_shifts_toward_the_hard_subset(tmp_path):
    data, hard = planted_hard_data()
    # a near-fixed network (one resolution, depth 1) so it fits the clean labels in seconds
    E = 16
    ctx = tiny_ctx(tmp_path, "pada", epochs=E, data=data, lr=0.3, label_smoothing=0.0,
                   space_changes={"resolutions": [8], "stages": [TINY_SPACE["stages"][0] | {"depths": [1]}]})
    trainer = make_trainer(ctx, 32)
    strat = trainer.strategy
    orders, scores = recording(trainer)
    trainer.fit()
    n = len(data.train)
    is_hard = np.zeros(n, bool)
    is_hard[hard] = True
    share = is_hard.mean()
    # g: loss-gradient norms are larger on the wrong labels
    g = scores[E - 1]
    drawn = g > 0
    assert g[is_hard & drawn].mean() > 1.3 * g[~is_hard & drawn].mean()
    # epoch 0 is the plain pass (each sample once); later epochs resample with replacement
    assert sorted(orders[0]) == list(range(n))
    assert len(set(orders[E - 1].tolist())) < n
    # the drawn indices over-represent the hard subset in the late epochs (tau >= 0.5)
    late = np.concatenate([orders[e] for e in range(E // 2, E)])
    assert is_hard[late].mean() > 1.1 * share
    # and q (from the last epoch's scores, tau = (E-1)/E) puts more mass on it than its share
    q = strat.q.numpy()
    assert q[is_hard].mean() > 1.3 * q[~is_hard].mean()
    assert q[is_hard].sum() > 1.25 * share
    assert q.sum() == pytest.approx(1.0)
    # with data sampling off the order stays a permutation
    ctx2 = tiny_ctx(tmp_path / "b", "pada", epochs=E, data=data, options={"data_sampling": False},
                    space=ctx.space)
    strat2 = STRATEGIES.get("pada")(ctx2, STRATEGIES.get("pada").parse_options({"data_sampling": False}))
    strat2.load_state_dict(strat.state_dict())
    assert sorted(strat2.epoch_order(0, E - 1, n)) == list(range(n))


def test_scores_of_samples_not_drawn_are_reset_each_epoch(tmp_path):
    """Official: per-sample scores restart at 0 each epoch; a sample not drawn keeps 0 and
    gets only the uniform floor (1 - tau)/N of q."""
    E = 4
    data, _ = planted_hard_data(n=192)
    ctx = tiny_ctx(tmp_path, "pada", epochs=E, data=data, space_changes={"resolutions": [8]})
    trainer = make_trainer(ctx, 32)
    strat = trainer.strategy
    orders, scores = recording(trainer)
    q_after = {}
    real_end = strat.end_epoch

    def end(phase, epoch):
        out = real_end(phase, epoch)
        q_after[epoch] = strat.q.clone().numpy()
        return out

    strat.end_epoch = end
    trainer.fit()
    n = len(data.train)
    assert (scores[0] > 0).all()  # epoch 0 draws every sample once
    for e in (1, 2):
        drawn = np.zeros(n, bool)
        drawn[orders[e]] = True
        assert 0 < (~drawn).sum() < n  # with replacement: some samples are not drawn
        assert (scores[e][~drawn] == 0).all()  # reset, not the stale epoch-0 value
        assert (scores[e][drawn] > 0).all()
        tau = e / E
        np.testing.assert_allclose(q_after[e][~drawn], (1 - tau) / n, rtol=1e-12)
        assert (q_after[e][drawn] > (1 - tau) / n).all()
    # epoch 1 draws from q at tau = 0 (the epoch-0 distribution): uniform, with replacement
    np.testing.assert_allclose(q_after[0], 1.0 / n)


def test_path_importance_is_a_running_average_of_clipped_gradient_norms(tmp_path):
    """Real forward/backward steps, with the gradients of kernel 5 in block (0, 0) scaled
    up 10x (a planted choice value with larger gradient norms)."""
    ctx = tiny_ctx(tmp_path, "pada", epochs=4, grad_clip=1e9)  # clipping is a no-op here
    strat = STRATEGIES.get("pada")(ctx, STRATEGIES.get("pada").parse_options({}))
    net = strat.supernet
    assert strat.path_distribution("k0_0") == {3: 0.5, 5: 0.5}
    batches = ctx.data.batches("train", 32)
    G5 = 0.0
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
            v = gradient_norm_sums({"k": list(net.stages[0][0].dw.parameters())})["k"]
            G5 = 0.5 * (G5 + v)  # the official running average, weight 1/2, from 0
        strat.after_backward(arch, out.detach(), y, idx)
        strat.clip_gradients()
    G = strat.path_importance("k0_0")
    assert G[5] == pytest.approx(G5, rel=1e-9)
    assert G[5] > 3 * G[3] > 0
    # the resolution has no weights: G = 0 (as the official code's pooling / skip ops)
    assert set(strat.path_importance("r").values()) == {0.0}
    strat.end_epoch(0, 2)  # tau = 2/4 of the epoch just finished
    p = strat.path_distribution("k0_0")
    assert p[5] == pytest.approx(0.5 * G[5] / (G[3] + G[5]) + 0.25)
    assert p[5] > 0.6 > 0.4 > p[3]
    assert strat.path_distribution("r") == {8: 0.5, 10: 0.5}
    assert set(strat.path_importance("k0_0").values()) == {0.0}  # reset for the next epoch
    # and draws follow p: kernel 5 is drawn more often in block (0, 0)
    draws = [strat.draw(StepInfo(0, 3, s, 0))["k0_0"] for s in range(400)]
    assert draws.count(5) / 400 == pytest.approx(p[5], abs=0.08)


def test_path_scores_are_read_after_clipping(tmp_path):
    ctx = tiny_ctx(tmp_path, "pada", grad_clip=1e-3)
    strat = STRATEGIES.get("pada")(ctx, STRATEGIES.get("pada").parse_options({}))
    assert strat.ctx.cfg.grad_clip == 1e-3  # the experiment's value wins over PA&DA's default 5
    assert STRATEGIES.get("pada")(tiny_ctx(tmp_path, "pada"), strat.options).ctx.cfg.grad_clip == 5.0
    x, y, idx = next(ctx.data.batches("train", 32))
    arch = strat.draw(StepInfo(0, 0, 0, 0))
    strat.supernet.set_active(arch)
    out = strat.supernet(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    n_tensors = len(list(strat.supernet.parameters()))
    strat.after_backward(arch, out.detach(), y, idx)
    strat.clip_gradients()
    assert 0 < float(strat.G.max()) <= 0.5 * n_tensors * 1e-3  # half of a sum of clipped norms


def test_nb201_none_gets_the_smallest_path_probability(tmp_path):
    """On nb201.yaml after a short run: one op distribution for the 6 edges; the convs
    have weights, none / skip / avg-pool get G = 0, so p(none) is the smallest."""
    space = load_space(SHIPPED_SPACES / "nb201.yaml")
    full = load_data(DataConfig(name="digits", resolution=8, batch_size=16, calib_images=16), 3)  # resized to 32 per batch
    data = DataBundle(TensorData(full.train.x[:48], full.train.y[:48]), full.val, full.calib, 10, 3, 8)
    E = 2
    ctx = tiny_ctx(tmp_path, "pada", epochs=E, data=data, space=space, lr=0.05)
    trainer = make_trainer(ctx, 16)
    strat = trainer.strategy
    assert choice_groups(space) == [[p.name for p in space.params]]  # one distribution, shared
    trainer.fit()
    p = strat.path_distribution("n0_0")
    assert all(strat.path_distribution(n) == p for n in ("n1_0", "n2_1"))
    tau = (E - 1) / E
    assert p["none"] == min(p.values()) == pytest.approx((1 - tau) / 5)
    assert p["none"] == p["skip_connect"] == p["avg_pool_3x3"]
    assert p["nor_conv_3x3"] > p["none"] and p["nor_conv_1x1"] > p["none"]
    assert sum(p.values()) == pytest.approx(1.0)


def test_attribution_covers_active_choices_with_the_weights_they_use(tmp_path):
    ctx = tiny_ctx(tmp_path, "pada")
    strat = STRATEGIES.get("pada")(ctx, STRATEGIES.get("pada").parse_options({}))
    net, space = strat.supernet, ctx.space
    arch = space.arch({**space.max_arch(), "d1": 1, "k0_1": 3, "e0_0": 2})
    groups = choice_parameters(net, arch)
    assert set(groups) == space.active(arch)
    assert "k1_1" not in groups  # stage 1 has depth 1: its second block is inactive
    assert groups["r"] == []  # parameter-free
    ids = {id(t) for t in groups["k0_1"]}
    assert id(net.stages[0][1].dw.weight) in ids and id(net.stages[0][0].dw.weight) not in ids
    x, y, _ = next(ctx.data.batches("train", 16))
    net.set_active(arch)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    norms = gradient_norm_sums(groups)
    assert norms["r"] == 0.0 and all(v > 0 for k, v in norms.items() if k != "r")
    w = net.stages[0][1].dw.weight
    assert norms["k0_1"] == pytest.approx(sum(float(t.grad.norm()) for t in groups["k0_1"] if t.grad is not None))
    # the norm is over what the value used: a 3x3 kernel leaves the 5x5 rim without gradient
    assert w.grad[:, :, 0].abs().sum() == 0 and w.grad[:, :, 1:4, 1:4].abs().sum() > 0


def test_importance_weights_and_state_roundtrip(tmp_path):
    ctx = tiny_ctx(tmp_path, "pada", epochs=3, options={"importance_weights": True})
    trainer = make_trainer(ctx, 64)
    trainer.fit()
    strat = trainer.strategy
    assert strat.options.importance_weights
    state, _ = load_checkpoint(tmp_path / "supernet" / "last.safetensors")
    s = state["strategy"]
    assert torch.equal(s["q"], strat.q) and torch.equal(s["p"], strat.p)
    fresh = STRATEGIES.get("pada")(ctx, strat.options)
    fresh.load_state_dict(s)
    n = len(ctx.data.train)
    assert fresh.epoch_order(0, 2, n).tolist() == strat.epoch_order(0, 2, n).tolist()
    # with weights on, the loss of a batch is the IW-weighted mean
    x, y, idx = next(ctx.data.batches("train", 16))
    arch = fresh.draw(StepInfo(0, 2, 0, 0))
    fresh.supernet.set_active(arch)
    out = fresh.supernet(x)
    plain = torch.nn.functional.cross_entropy(out, y, label_smoothing=ctx.cfg.label_smoothing, reduction="none")
    w = 1.0 / (n * fresh.q[idx].numpy())
    path_w = np.prod([1.0 / (len(ctx.space.param(c).choices) * fresh.path_distribution(c)[arch[c]])
                      for c in ctx.space.active(arch)])
    expected = float((plain.detach() * torch.as_tensor(w, dtype=plain.dtype)).mean()) * path_w
    assert float(fresh.loss(out, y, idx, arch).detach()) == pytest.approx(expected, rel=1e-5)
    assert path_w != pytest.approx(1.0)  # p is no longer uniform after two epochs
