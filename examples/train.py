"""A synthetic training script, as a user writes one: the SDK, a config, metrics, an output file.

    runyard run --project demo -- python examples/train.py --steps 20000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import runyard

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=20_000)
parser.add_argument("--lr", type=float, default=3e-4)
args = parser.parse_args()

run = runyard.init(project="demo", config={"lr": args.lr, "steps": args.steps, "optimizer": "adam"})
rng = np.random.default_rng(0)
spike = int(args.steps * 0.66685)
for step in range(args.steps):
    loss = 2.5 * np.exp(-step / (args.steps / 5)) + 0.1 + rng.normal(0, 0.03)
    if step == spike:
        loss = 9.0  # one bad batch: a sampled chart would likely hide it, an envelope never does
    accuracy = 1 - 0.9 * np.exp(-step / (args.steps / 4)) + rng.normal(0, 0.01)
    run.log({"train/loss": float(loss), "train/accuracy": float(accuracy)}, step=step)
    if step % 5000 == 0:
        print(f"step {step}: loss {loss:.4f}")

Path("outputs").mkdir(exist_ok=True)
Path("outputs/model.json").write_text(json.dumps({"weights": rng.normal(size=16).round(4).tolist()}))
print(f"done: spike at step {spike}, model in outputs/model.json")
