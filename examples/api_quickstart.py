"""nasplat from Python: train, pull a subnet out, search, read the results as pandas
DataFrames, export. The same steps as `nasplat run`, one function each.

    python examples/api_quickstart.py [EXPERIMENT]      (default: examples/digits_ofa.yaml)

Every stage is resumable: a second run reuses the trained supernet and the search.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import nasplat


def main(experiment: str | Path = Path(__file__).with_name("digits_ofa.yaml")) -> dict:
    exp = nasplat.load_experiment(experiment)
    print(f"space {exp.space.config.name}: {exp.space.count():.2e} subnets")

    nasplat.train_supernet(exp)                           # runs/<name>/supernet/supernet.safetensors
    net = nasplat.load_supernet(exp)                      # the trained supernet (or a run folder)
    data = nasplat.load_data(exp)

    # two subnets: the largest and a random one, each with its BN statistics recalibrated
    accuracies = {}
    for arch in (exp.space.max_arch(), exp.space.sample(np.random.default_rng(0))):
        sub = nasplat.extract_subnet(net, arch, data)
        accuracies[arch.id] = nasplat.evaluate(sub, data, resolution=exp.space.resolution(arch))
        print(f"subnet {arch.id}: {exp.space.macs(arch) / 1e6:.2f}M MACs, accuracy {accuracies[arch.id]:.2%}")

    nasplat.run_search(exp, quiet=True)                   # runs/<name>/search/
    trials, front = nasplat.read_trials(exp), nasplat.read_pareto(exp)
    print(f"{len(trials)} archs evaluated, {len(front)} on the Pareto front:")
    print(front.drop(columns=["arch"]).to_string(index=False))

    best = exp.space.arch(__import__("json").loads(front.iloc[-1]["arch"]))
    (entry,) = nasplat.export_subnets(exp, [best])        # ONNX + manifest.json with preprocessing
    print(f"exported {entry['file']}: accuracy {entry['accuracy']:.2%}")
    return {"experiment": exp, "accuracies": accuracies, "trials": trials, "front": front, "entry": entry}


if __name__ == "__main__":
    main(*sys.argv[1:2])
