"""eval_cost: the cost of evaluating one subnet through the supernet, like with like
with OFA's own code, and the rank fidelity of the cheaper paths.

Part 1, cost. The OFA structure (``search_spaces/ofa_mbv3.yaml``, equal to the ``ofa``
package's ``OFAMobileNetV3`` w1.0, as tests/test_ofa_equal.py proves) at 32x32, random
weights (time does not depend on them), the min / mid / max arch, in one process with
the same torch threads, alternating:

- OFA: ``set_active_subnet`` + ``get_active_subnet(preserve_weight=True)`` (extract),
  ``set_running_statistics`` over 2000 images in batches of 200 (OFA's protocol);
- nasplat reference: ``extract`` + ``recalibrate_bn`` (OFA's mode) over the same 2000
  images in batches of 200 (what OFA does);
- nasplat fast paths: the first N of those images (``--calib``) in one batch, NCHW or
  channels_last.

Validation is timed on its own (``--val-images`` images, batch 500): torch eager NCHW,
channels_last, and ONNX Runtime (export + session + run). The images of part 1 are
Gaussian noise: BN statistics and forward cost do not depend on the pixels.

Part 2, fidelity, on a trained supernet: the demo's (``examples/digits_ofa.yaml``,
``runs/digits_ofa``; trained first when missing). ``--archs`` subnets stratified over
MACs are evaluated by the reference (OFA's protocol: 2000 random training images with
the experiment's seed, capped at the training split, batch 200) and by each fast path;
Kendall tau between their accuracies.

Goal (docs/benchmarks.md): a fast path whose extract + recalibration costs <= 1/2 of
OFA's at Kendall tau >= 0.95. The issue quotes OFA at 0.65 / 1.8 / 5.9 s (min / mid /
max, 32x32); this bench measures OFA's code on this machine in the same process instead.

    python -m bench.eval_cost [--quick] [--threads 1] [--calib 250,500]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, today, trained_experiment  # noqa: E402

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "examples" / "digits_ofa.yaml"
RES = 32


def ofa_setting(arch, n_stages: int = 5, depth: int = 4) -> dict[str, list[int]]:
    """A nasplat arch of ofa_mbv3 as OFA's ``set_active_subnet`` arguments."""
    return {"ks": [int(arch.get(f"k{i}_{j}", 3)) for i in range(n_stages) for j in range(depth)],
            "e": [int(float(arch.get(f"e{i}_{j}", 3))) for i in range(n_stages) for j in range(depth)],
            "d": [int(arch[f"d{i}"]) for i in range(n_stages)]}


def cost_part(args: argparse.Namespace, sizes: list[int]) -> list[dict]:
    import torch
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3
    from ofa.imagenet_classification.elastic_nn.utils import set_running_statistics

    from nasplat.space import load_space
    from nasplat.supernet import build_supernet, recalibrate_bn
    from nasplat.supernet.evaluate import batch_accuracy, ort_accuracy

    space = load_space(HERE.parent / "search_spaces" / "ofa_mbv3.yaml")
    torch.manual_seed(0)
    ours = build_supernet(space).eval()
    ofa = OFAMobileNetV3(n_classes=1000, dropout_rate=0, width_mult=1.0, ks_list=[3, 5, 7],
                         expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4]).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2000, 3, RES, RES, generator=g)
    ref = list(images.split(200))
    fast = {n: [images[:n]] for n in sizes}
    fast_cl = {n: [b.contiguous(memory_format=torch.channels_last) for b in fast[n]] for n in sizes}
    val = [(x, torch.zeros(len(x), dtype=torch.long)) for x in torch.randn(args.val_images, 3, RES, RES,
                                                                           generator=g).split(500)]
    archs = {"min": space.min_arch(), "max": space.max_arch()}
    rng = np.random.default_rng(7)
    sample = sorted((space.sample(rng) for _ in range(101)), key=space.macs)
    archs = {"min": archs["min"], "mid": sample[50], "max": archs["max"]}

    def ofa_path(arch):
        t0 = time.perf_counter()
        ofa.set_active_subnet(**ofa_setting(arch))
        sub = ofa.get_active_subnet(preserve_weight=True)
        t1 = time.perf_counter()
        set_running_statistics(sub, [(x, None) for x in ref])
        return t1 - t0, time.perf_counter() - t1

    def our_path(arch, batches, channels_last=False):
        t0 = time.perf_counter()
        static = ours.extract(arch)
        if channels_last:
            static = static.to(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        recalibrate_bn(static, batches, RES)
        return t1 - t0, time.perf_counter() - t1, static.eval()

    rows = []
    for name, arch in archs.items():
        t: dict[str, list] = {}
        for _ in range(args.reps):  # alternate every path within a repetition
            t.setdefault("OFA (ofa package), 2000 imgs / bs 200", []).append(ofa_path(arch))
            e, r, static = our_path(arch, ref)
            t.setdefault("nasplat reference, 2000 imgs / bs 200", []).append((e, r))
            for n in sizes:
                t.setdefault(f"nasplat fast, {n} imgs / bs {n}", []).append(our_path(arch, fast[n])[:2])
                t.setdefault(f"nasplat fast, {n} imgs / bs {n}, channels_last", []).append(
                    our_path(arch, fast_cl[n], True)[:2])
            for label, fn in (("torch eager", lambda: batch_accuracy(static, val, RES)),
                              ("torch channels_last", lambda: batch_accuracy(
                                  static.to(memory_format=torch.channels_last), val, RES, True)),
                              ("onnxruntime (export + session + run)",
                               lambda: ort_accuracy(static.to(memory_format=torch.contiguous_format), val, RES,
                                                    torch.get_num_threads()))):
                t0 = time.perf_counter()
                fn()
                t.setdefault(f"val: {label}", []).append((time.perf_counter() - t0,))
        ofa_total = float(np.median([sum(x) for x in t["OFA (ofa package), 2000 imgs / bs 200"]]))
        for path, v in t.items():
            med = np.median(np.array(v), axis=0)
            rows.append({"subnet": name, "mmacs": space.macs(arch) * (RES / space.resolution(arch)) ** 2 / 1e6,
                         "path": path, "times": med, "ofa": ofa_total})
    return rows


def fidelity_part(args: argparse.Namespace, sizes: list[int]) -> tuple[dict, str]:
    import torch
    from scipy.stats import kendalltau

    from nasplat.data import load_experiment_data
    from nasplat.hw.stage import stratified_archs
    from nasplat.paths import supernet_checkpoint
    from nasplat.supernet import build_supernet
    from nasplat.supernet.evaluate import SubnetEvaluator

    exp = trained_experiment(args.fidelity_exp, args.quick)
    ckpt = supernet_checkpoint(exp.run_dir)
    torch.manual_seed(0)
    net = build_supernet(exp.space, checkpoint=ckpt).eval()
    data = load_experiment_data(exp)
    archs = stratified_archs(exp.space, args.archs, seed=7)
    paths = {"reference": SubnetEvaluator(net, data, calib_images=None, calib_batch=200, seed=exp.config.seed)}
    for n in sizes:
        paths[f"{n} imgs / bs {n}"] = SubnetEvaluator(net, data, calib_images=n, calib_batch=n, seed=exp.config.seed)
        paths[f"{n} imgs / bs {n}, channels_last"] = SubnetEvaluator(
            net, data, calib_images=n, calib_batch=n, seed=exp.config.seed, channels_last=True)
    acc = {k: [ev.evaluate(a).accuracy for a in archs] for k, ev in paths.items()}
    out = {}
    for k in paths:
        if k != "reference":
            out[k] = (float(kendalltau(acc["reference"], acc[k]).statistic),
                      float(100 * np.max(np.abs(np.array(acc["reference"]) - np.array(acc[k])))))
    n_ref = sum(len(x) for x in paths["reference"].calib)
    note = (f"{exp.space.config.name} at {data.resolution}x{data.resolution}, weights {ckpt} "
            f"({exp.config.train.epochs} epochs {exp.config.train.strategy}), {len(archs)} subnets stratified over "
            f"MACs, reference {n_ref} images, accuracy {min(acc['reference']):.3f}..{max(acc['reference']):.3f}")
    return out, note


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="eval_cost", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the search evaluators' default)")
    ap.add_argument("--calib", default="250,500", help="fast-path calibration sizes")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--val-images", type=int, default=500)
    ap.add_argument("--archs", type=int, default=None, help="subnets of the fidelity part")
    ap.add_argument("--fidelity-exp", default=str(DEMO))
    ap.add_argument("--skip-fidelity", action="store_true")
    args = ap.parse_args(argv)
    args.reps = args.reps or (2 if args.quick else 5)
    args.archs = args.archs or (12 if args.quick else 50)
    sizes = [int(s) for s in args.calib.split(",")]

    import torch

    torch.set_num_threads(args.threads)
    print(f"# eval_cost  {today()}  {machine()}")
    rows = cost_part(args, sizes)
    print(f"\nPart 1, cost: ofa_mbv3 (= OFAMobileNetV3 w1.0) at {RES}x{RES}, random weights, "
          f"medians of {args.reps} alternated repetitions; validation on {args.val_images} images, batch 500")
    print("\n| subnet | MMACs | path | extract s | recal s | extract+recal s | ÷ OFA extract+recal |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["path"].startswith("val:"):
            continue
        e, c = r["times"]
        print(f"| {r['subnet']} | {r['mmacs']:.1f} | {r['path']} | {e:.3f} | {c:.3f} | {e + c:.3f} | "
              f"{(e + c) / r['ofa']:.2f} |")
    print("\n| subnet | validation | s |")
    print("|---|---|---|")
    for r in rows:
        if r["path"].startswith("val:"):
            print(f"| {r['subnet']} | {r['path'][5:]} | {r['times'][0]:.3f} |")
    if not args.skip_fidelity:
        fid, note = fidelity_part(args, sizes)
        print(f"\nPart 2, fidelity: {note}")
        print("\n| fast path | Kendall tau vs reference | max abs acc diff (pt) |")
        print("|---|---|---|")
        for k, (tau, diff) in fid.items():
            print(f"| {k} | {tau:.3f} | {diff:.2f} |")
    print("\nAnchor: OFA's own code measured above (docs/benchmarks.md quotes 0.65 / 1.8 / 5.9 s for min / mid / max at 32x32).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
