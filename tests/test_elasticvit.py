"""Strategy elasticvit: the level walk, pools, memory banks, sampling, steps on real data."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nasplat.data import DataConfig, load_data
from nasplat.errors import UserError
from nasplat.space import load_space
from nasplat.supernet import resize
from nasplat.train.config import TrainConfig
from nasplat.train.distributed import Dist
from nasplat.train.strategies import StepInfo, TrainContext, derived_rng
from nasplat.train.losses import alpha_divergence, label_smoothed_ce
from nasplat.train.strategies.elasticvit import (
    PAPER_LEVELS,
    ElasticViT,
    MemoryBank,
    build_pools,
    load_pools,
    preference_scores,
    save_pools,
    walk,
)

REPO = Path(__file__).resolve().parent.parent
SMALL = REPO / "search_spaces" / "elasticvit_small.yaml"
LEVELS = [4.0, 8.0, 12.0, 16.0]
BOUND = 0.8


@pytest.fixture(scope="module")
def small():
    return load_space(SMALL)


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(name="digits", resolution=24, batch_size=32, calib_images=100), 3)


def make_strategy(space, data, run_dir, seed=0, **options) -> ElasticViT:
    opts = {"levels": LEVELS, "bound": BOUND, "pool_size": 300, "bank_size": 8, "big_bank_size": 4,
            "big_bank_from": 12, **options}
    cfg = TrainConfig(strategy="elasticvit", epochs=1, lr=0.05, options=opts)
    ctx = TrainContext(space, data, cfg, seed, Path(run_dir), torch.device("cpu"), Dist())
    torch.manual_seed(seed)
    return ElasticViT(ctx, ElasticViT.parse_options(cfg.options))


def level_of(macs: float, levels=LEVELS, bound=BOUND) -> int:
    hits = [i for i, t in enumerate(levels) if t * 1e6 <= macs <= (t + bound) * 1e6]
    assert len(hits) == 1, (macs, hits)
    return hits[0]


def test_walk_moves_at_most_one_level_and_obeys_end_rules():
    n = 5
    level, moves = 0, {0: [], n - 1: [], "mid": []}
    for step in range(6000):
        new = walk(level, n, derived_rng(7, step))
        assert 0 <= new < n and abs(new - level) <= 1
        moves[level if level in (0, n - 1) else "mid"].append(new - level)
        level = new
    assert set(moves[0]) == {0, 1} and set(moves[n - 1]) == {-1, 0} and set(moves["mid"]) == {-1, 0, 1}
    # at the ends: {0, 0, +1} / {-1, 0, 0}; inside: uniform over -1, 0, +1
    assert abs(np.mean(np.array(moves[0]) == 0) - 2 / 3) < 0.06
    assert abs(np.mean(np.array(moves[n - 1]) == 0) - 2 / 3) < 0.06
    assert abs(np.mean(np.array(moves["mid"]) == 1) - 1 / 3) < 0.04
    assert walk(0, 1, derived_rng(1)) == 0


def test_bank_keeps_the_best_scoring_entries():
    rng = np.random.default_rng(3)
    bank = MemoryBank(10)
    offered = {}
    for i in range(200):
        code, score = (i, i % 7), float(rng.normal())
        offered[code] = score
        bank.offer(code, score)
        assert len(bank) == min(i + 1, 10)
    best = sorted(offered, key=offered.get, reverse=True)[:10]
    assert set(bank.codes) == set(best)
    assert bank.best() == best[0]
    worst_kept = min(bank.scores)
    assert not bank.offer((999, 0), worst_kept - 1.0) and (999, 0) not in bank.codes
    assert bank.offer((999, 1), max(bank.scores) + 1.0) and bank.best() == (999, 1)
    assert bank.offer((999, 1), -50.0) and bank.scores[bank.codes.index((999, 1))] == -50.0  # re-scored in place
    assert bank.half_full and not MemoryBank(10).half_full


def test_bank_draws_with_softmax_of_scores():
    bank = MemoryBank(3)
    for code, s in [((0,), 0.0), ((1,), -1.0), ((2,), -2.0)]:
        bank.offer(code, s)
    rng = np.random.default_rng(0)
    draws = [bank.draw(rng)[0] for _ in range(6000)]
    want = np.exp([0.0, -1.0, -2.0]) / np.exp([0.0, -1.0, -2.0]).sum()
    got = np.bincount(draws, minlength=3) / len(draws)
    assert np.abs(got - want).max() < 0.03


def test_pools_lie_in_their_levels_and_cache_round_trips(small, tmp_path):
    pools = build_pools(small, LEVELS, BOUND, 200, seed=1, show=False)
    assert [len(p) for p in pools] == [200] * len(LEVELS)
    for t, pool in zip(LEVELS, pools):
        assert len(np.unique(pool, axis=0)) == len(pool)
        macs = small.macs_batch(pool)
        assert macs.min() >= t * 1e6 and macs.max() <= (t + BOUND) * 1e6
        for code in pool[:: 40]:  # the per-arch cost model agrees
            assert t * 1e6 <= small.macs(small.decode(code)) <= (t + BOUND) * 1e6
    again = build_pools(small, LEVELS, BOUND, 200, seed=1, show=False)
    assert all(np.array_equal(a, b) for a, b in zip(pools, again))
    meta = {"levels": LEVELS, "bound": BOUND, "space_hash": small.hash()}
    path = tmp_path / "supernet" / "pools.npz"
    save_pools(path, pools, meta)
    back = load_pools(path, meta)
    assert back is not None and all(np.array_equal(a, b) for a, b in zip(pools, back))
    assert load_pools(path, {**meta, "bound": 0.5}) is None  # other options: rebuild
    path.write_bytes(b"not an npz")
    assert load_pools(path, meta) is None
    with pytest.raises(UserError) as e:
        build_pools(small, [1000.0], 1.0, 10, seed=0, max_draws=20000, show=False)
    assert e.value.field == "train.options.levels"


def test_every_sampled_subnet_lies_in_its_level(small, digits, tmp_path):
    strat = make_strategy(small, digits, tmp_path, p_bank=0.5)
    strat.ensure_pools()
    assert (tmp_path / "supernet" / "pools.npz").is_file()
    rng = np.random.default_rng(0)
    from_bank = 0
    for li in range(len(LEVELS)):
        strat.level = li
        for _ in range(40):
            code, b = strat.draw(rng, epoch=0)
            from_bank += b
            assert level_of(small.macs(small.decode(code))) == li
            strat.banks[li].offer(code, float(rng.normal()))
    assert from_bank > 10  # banks filled up, then half the draws came from them
    # a fresh strategy on the same run folder reuses the cached pools
    again = make_strategy(small, digits, tmp_path, p_bank=0.5)
    mtime = (tmp_path / "supernet" / "pools.npz").stat().st_mtime_ns
    assert all(np.array_equal(a, b) for a, b in zip(again.ensure_pools(), strat.pools))
    assert (tmp_path / "supernet" / "pools.npz").stat().st_mtime_ns == mtime


def test_preference_picks_wider_and_shallower(small, digits, tmp_path):
    strat = make_strategy(small, digits, tmp_path)
    pool = strat.ensure_pools()[2]
    rng = np.random.default_rng(4)
    anchor = small.encode(small.min_arch())
    chosen_w, all_w, chosen_d, all_d = [], [], [], []
    for _ in range(200):
        cands = pool[rng.integers(len(pool), size=5)]
        diffs = preference_scores(small, cands, anchor, strat.widths, strat.depths)
        pick = cands[int(np.argmin(diffs))]
        chosen_w.append(pick[strat.widths].sum()), chosen_d.append(pick[strat.depths].sum())
        all_w.append(cands[:, strat.widths].sum(1).mean()), all_d.append(cands[:, strat.depths].sum(1).mean())
    assert np.mean(chosen_w) > np.mean(all_w) + 0.3 and np.mean(chosen_d) < np.mean(all_d) - 0.3


def test_steps_train_level_subnets_and_min_subnet_and_state_round_trips(small, digits, tmp_path):
    strat = make_strategy(small, digits, tmp_path, rescores_per_epoch=2)
    strat.banks[1].offer(tuple(small.encode(small.max_arch())), 5.0)  # out of level 1's range
    model = strat.model.train()
    levels = []
    batches = digits.batches("train", 32, np.arange(32 * 5))
    for step, (x, y, idx) in enumerate(batches):
        model.zero_grad(set_to_none=True)
        out = strat.step(x, y, idx, StepInfo(0, 0, step, step))
        assert len(out.archs) == 4 and out.archs[3].id == small.decode(strat.min_codes[strat.level]).id
        assert np.isfinite(out.loss)
        lv = {level_of(small.macs(a)) for a in out.archs[:3]}
        assert lv == {strat.level}
        levels.append(strat.level)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        if step == 0:
            assert len(strat.banks[1]) == 0  # epoch-start re-scoring dropped the out-of-range entry
    assert all(abs(a - b) <= 1 for a, b in zip(levels, levels[1:]))
    assert sum(len(b) for b in strat.banks) > 0
    for bank in strat.banks:
        for code in bank.codes:
            assert level_of(small.macs(small.decode(code))) == strat.banks.index(bank)
    state = strat.state_dict()
    other = make_strategy(small, digits, tmp_path)
    other.load_state_dict(state)
    assert other.level == strat.level
    assert [b.codes for b in other.banks] == [b.codes for b in strat.banks]
    assert [b.scores for b in other.banks] == [b.scores for b in strat.banks]


def test_rescoring_leaves_running_stats_and_orders_by_ce(small, digits, tmp_path):
    strat = make_strategy(small, digits, tmp_path)
    pool = strat.ensure_pools()[0]
    for code in pool[:3]:
        strat.banks[0].offer(tuple(code), 0.0)
    x, y, _ = next(digits.batches("train", 32))
    before = {k: v.clone() for k, v in strat.model.state_dict().items()}
    strat.rescore([0], x, y, drop_out_of_range=False)
    after = strat.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "num_batches" not in k)
    assert all(s < 0 for s in strat.banks[0].scores) and len(set(strat.banks[0].scores)) == 3


def test_works_for_mbv3(digits, tmp_path):
    space = load_space(REPO / "search_spaces" / "ofa_mbv3_digits.yaml")
    data = load_data(DataConfig(name="digits", resolution=12, batch_size=32, calib_images=100), 1)
    lo, hi = space.macs(space.min_arch()) / 1e6, space.macs(space.max_arch()) / 1e6
    levels = [round(lo + (hi - lo) * f, 2) for f in (0.25, 0.45)]
    strat = make_strategy(space, data, tmp_path, levels=levels, bound=0.3, pool_size=20)
    for step, (x, y, idx) in enumerate(data.batches("train", 32, np.arange(64))):
        out = strat.step(x, y, idx, StepInfo(0, 0, step, step))
        for a in out.archs[:3]:
            assert level_of(space.macs(a), levels, 0.3) == strat.level


def test_train_experiment_runs_elasticvit_on_digits(tmp_path):
    cfg = yaml.safe_load((REPO / "examples" / "digits_elasticvit.yaml").read_text())
    cfg["space"] = str(SMALL)
    cfg["output_dir"] = str(tmp_path / "runs")
    cfg["data"]["resolution"] = 24
    cfg["data"]["batch_size"] = 256
    cfg["train"]["epochs"] = 1
    cfg["train"]["options"].update(pool_size=100)
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(cfg))
    from nasplat.experiment import load_experiment
    from nasplat.train.run import train_experiment

    train_experiment(load_experiment(exp))
    run = tmp_path / "runs" / cfg["name"] / "supernet"
    assert (run / "supernet.safetensors").is_file() and (run / "pools.npz").is_file()
    levels, bound = cfg["train"]["options"]["levels"], cfg["train"]["options"]["bound"]
    rows = list(csv.DictReader((run / "train_log.csv").open()))
    assert len(rows) == 1437 // 256
    seq = []
    for row in rows:
        macs = [int(m) for m in row["macs"].split(";")]
        seq.append(level_of(macs[0], levels, bound))
        assert {level_of(m, levels, bound) for m in macs[:3]} == {seq[-1]}
    assert all(abs(a - b) <= 1 for a, b in zip(seq, seq[1:]))
    from nasplat.checkpoint import load_checkpoint

    state, _ = load_checkpoint(run / "last.safetensors")
    assert state["strategy"]["level"] == seq[-1] and sum(len(b) for b in state["strategy"]["banks"]) > 0


def _dist_worker(rank: int, world: int, port: int, out: str) -> None:
    """One of two real torch.distributed (gloo) workers: each trains on its own shard."""
    import json
    import os

    import torch.distributed as torch_dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch_dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        space = load_space(SMALL)
        data = load_data(DataConfig(name="digits", resolution=24, batch_size=32, calib_images=100), 3)
        strat = make_strategy(space, data, Path(out) / f"rank{rank}", p_bank=1.0, bank_size=2, big_bank_size=2,
                              rescores_per_epoch=4)
        assert strat.ctx.dist.world_size == world
        opt = torch.optim.SGD(strat.model.parameters(), lr=0.05)
        order = np.arange(32 * world * 6)[rank::world]  # different minibatches on each worker
        ids = []
        for step, (x, y, idx) in enumerate(data.batches("train", 32, order)):
            opt.zero_grad(set_to_none=True)
            res = strat.step(x, y, idx, StepInfo(0, 0, step, step))
            strat.ctx.dist.average_gradients(strat.model.parameters())
            opt.step()
            ids.append([a.id for a in res.archs])
        Path(out, f"rank{rank}.json").write_text(json.dumps({"ids": ids, "state": strat.state_dict()}))
    finally:
        torch_dist.destroy_process_group()


def test_two_workers_hold_the_same_banks_and_draw_the_same_subnets(tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_dist_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    a, b = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert a["ids"] == b["ids"] and a["state"] == b["state"]
    banks = a["state"]["banks"]
    assert sum(len(bk) for bk in banks) > 0
    # once a bank was more than half full, p_bank = 1 drew from it: bank entries were trained
    bank_ids = {load_space(SMALL).decode(c).id for bk in banks for c, _ in bk}
    assert bank_ids & {i for step in a["ids"][2:] for i in step[:3]}


def test_min_archs_option_picks_the_level_minimum(small, digits, tmp_path):
    bigger = small.min_arch().replace(r=32, w5=96)
    strat = make_strategy(small, digits, tmp_path, min_archs=[{"up_to": 4, "arch": dict(small.min_arch())},
                                                              {"up_to": 12, "arch": dict(bigger)}])
    ids = [small.decode(c).id for c in strat.min_codes]
    assert ids == [small.min_arch().id, bigger.id, bigger.id, bigger.id]
    with pytest.raises(UserError) as e:
        make_strategy(small, digits, tmp_path, min_archs=[{"up_to": 4, "arch": {"r": 33}}])
    assert e.value.field.startswith("train.options.min_archs.0")


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(tmp_path):
    """Kill a run after its step-4 checkpoint (a fault injected into the step), resume:
    the final weights and banks equal those of the uninterrupted run."""
    from nasplat.experiment import load_experiment
    from nasplat.checkpoint import load_checkpoint
    from nasplat.train.run import build_trainer

    cfg = yaml.safe_load((REPO / "examples" / "digits_elasticvit.yaml").read_text())
    cfg["space"] = str(SMALL)
    cfg["data"].update(resolution=24, batch_size=256)
    cfg["train"].update(epochs=1, checkpoint_every=2)
    cfg["train"]["options"].update(pool_size=100, bank_size=4, big_bank_size=2)
    finals = []
    for name in ("straight", "crashed"):
        cfg["output_dir"] = str(tmp_path / name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        exp = load_experiment(path)
        trainer = build_trainer(exp)
        if name == "crashed":
            real_step = trainer.strategy.step

            def crash(x, y, idx, info, real_step=real_step):
                if info.global_step == 4:
                    raise KeyboardInterrupt("killed")
                return real_step(x, y, idx, info)

            trainer.strategy.step = crash
            with pytest.raises(KeyboardInterrupt):
                trainer.fit()
            trainer = build_trainer(exp)
            assert trainer.resume() and trainer.position["global_step"] == 4
        trainer.fit()
        finals.append(load_checkpoint(exp.run_dir / "supernet" / "last.safetensors")[0])
    a, b = finals
    assert a["strategy"] == b["strategy"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_alpha_divergence_on_a_hand_computed_three_class_example():
    """AdaptiveLossSoft (alpha in {-1, 1}, ratio clip 5) on q = softmax([1, 0, -1]),
    p = [0.2, 0.5, 0.3]: D_-1 = (sum q^2/p - 1)/2 = 0.6798 > D_1 = KL(p||q) = 0.4780, so the
    alpha = -1 side is minimised, through the official surrogate -sum q * rho * log q with
    rho = 1/2 - q/p (its value; its gradient is D_-1's)."""
    z = torch.tensor([[1.0, 0.0, -1.0]], requires_grad=True)
    p = torch.tensor([[0.2, 0.5, 0.3]])
    e = [2.718281828, 1.0, 0.367879441]
    q = [v / sum(e) for v in e]  # 0.66524, 0.24473, 0.09003
    d_minus = 0.5 * sum(qi * qi / pi for qi, pi in zip(q, [0.2, 0.5, 0.3])) - 0.5
    d_plus = sum(pi * np.log(pi / qi) for qi, pi in zip(q, [0.2, 0.5, 0.3]))
    assert d_minus == pytest.approx(0.67975, abs=1e-4) and d_plus == pytest.approx(0.47796, abs=1e-4)
    # alpha = -1: rho = -(p/q)^-1 + 1/2 = 1/2 - q/p; the value is -sum q * rho * log q
    value = -sum(qi * (0.5 - qi / pi) * np.log(qi) for qi, pi in zip(q, [0.2, 0.5, 0.3]))
    assert value == pytest.approx(-0.71941, abs=1e-4)
    loss = alpha_divergence(z, p)
    assert float(loss.detach()) == pytest.approx(value, abs=1e-5)
    # its gradient is D_-1's
    loss.backward()
    z2 = z.detach().clone().requires_grad_(True)
    qq = torch.softmax(z2, 1)
    (0.5 * (qq * qq / p).sum() - 0.5).backward()
    assert torch.allclose(z.grad, z2.grad, atol=1e-6)
    # where KL(p||q) is the larger one (alpha = 1), the gradient is q - p
    z3 = torch.tensor([[4.0, 0.0, 0.0]], requires_grad=True)  # q = [0.965, 0.018, 0.018]
    p3 = torch.tensor([[0.2, 0.4, 0.4]])  # KL(p||q) = 2.18 > D_-1 = 1.82
    alpha_divergence(z3, p3).backward()
    assert torch.allclose(z3.grad, torch.softmax(z3.detach(), 1) - p3, atol=1e-6)


def test_level_minimum_distils_from_the_mean_softmax_with_alpha_divergence(small, digits, tmp_path):
    strat = make_strategy(small, digits, tmp_path)
    assert all(m.p == 0 for m in strat.model.modules() if isinstance(m, torch.nn.Dropout))  # head dropout 0
    x, y, idx = next(digits.batches("train", 32))
    out = strat.step(x, y, idx, StepInfo(0, 0, 1, 1))
    net = strat.supernet
    logits = []
    for a in out.archs:  # the step does no optimizer step: recompute its four losses
        net.set_active(a)
        logits.append(net(resize(x, small.resolution(a))))
    ce = [float(label_smoothed_ce(o, y, strat.ctx.cfg.label_smoothing).detach()) for o in logits[:3]]
    soft = torch.stack([torch.softmax(o.detach(), 1) for o in logits[:3]]).mean(0)
    kd = float(alpha_divergence(logits[3], soft).detach())
    assert out.loss == pytest.approx((sum(ce) + kd) / 4, rel=1e-4)
    assert out.archs[3] == small.decode(strat.min_codes[strat.level])


def test_paper_levels_walk_draws_inside_t_to_t_plus_20m(tmp_path):
    """elasticvit.yaml with the strategy's defaults: the paper's levels and bound 20 M."""
    paper = load_space(REPO / "search_spaces" / "elasticvit.yaml")
    data = load_data(DataConfig(name="digits", resolution=8, batch_size=32, calib_images=16), 3)
    cfg = TrainConfig(strategy="elasticvit", epochs=1, options={"pool_size": 40})
    strat = ElasticViT(TrainContext(paper, data, cfg, 0, tmp_path, torch.device("cpu"), Dist()),
                       ElasticViT.parse_options(cfg.options))
    assert strat.levels == PAPER_LEVELS == [100, 200, 300, 400, 500, 700, 900, 1200] and strat.bound == 20
    pools = strat.ensure_pools()
    seen = set()
    for step in range(300):
        rng = derived_rng(0, step)
        strat.level = walk(strat.level, len(strat.levels), rng)
        code, _ = strat.draw(rng, 0)
        t = strat.levels[strat.level]
        assert t * 1e6 <= paper.macs(paper.decode(code)) <= (t + 20) * 1e6
        seen.add(strat.level)
    assert len(seen) >= 4
    widths = [paper.params.index(paper.param(n)) for n in paper.width_chain()]
    for t, pool, low in zip(strat.levels, pools, strat.min_codes):
        values = np.array([[paper.params[j].choices[c] for j, c in zip(widths, row[widths])] for row in pool])
        assert (np.diff(values, axis=1) >= 0).all()  # widths never decrease across stages
        assert (pool >= low).all()  # the level's minimum is nested in every subnet of its pool
        assert paper.macs(paper.decode(low)) <= t * 1e6
    assert len({tuple(m) for m in strat.min_codes}) > 1  # per level, not one global minimum


def test_adamw_and_adaptive_gradient_clipping(small, digits, tmp_path):
    strat = make_strategy(small, digits, tmp_path)
    opt = strat.make_optimizer(strat.phases()[0])
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == 0.05  # the experiment's lr wins
    assert strat.ctx.cfg.weight_decay == 0.05  # the official weight decay where the experiment sets none
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]  # none on biases and norms
    x, y, idx = next(digits.batches("train", 32))
    strat.model.zero_grad(set_to_none=True)
    strat.step(x, y, idx, StepInfo(0, 0, 1, 1))
    for p in strat.model.parameters():
        if p.grad is not None:
            p.grad.mul_(1e4)  # far above 0.1 x the weights' norms
    strat.clip_gradients()
    for p in strat.model.parameters():
        if p.grad is None or p.ndim < 2:
            continue
        g, w = p.grad.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1).clamp(min=1e-3)
        assert (g <= 0.1 * w * (1 + 1e-4)).all()
