"""An ordinary training script that knows nothing of runyard: argparse flags, files written to the
working directory, a figure shown with plt.show(), metrics printed as JSON lines.

    runyard run --param lr=0.01 --param epochs=15 -- python examples/digits.py --lr {lr} --epochs {epochs}
    runyard rerun 1 --param lr=0.1       # the same code, the flag substituted again
    runyard cp 1:model.pkl .             # files the script wrote next to itself are the run's outputs
    runyard cp 1:figures/ figures/       # and so is the figure plt.show() would have put on a screen

It classifies scikit-learn's bundled 8x8 digits (no download) with a linear model trained epoch by
epoch, so there is a curve to watch. Needs scikit-learn and matplotlib (`pip install
'runyard[examples]'`, or `--pip scikit-learn --pip matplotlib` on the run).
"""

from __future__ import annotations

import argparse
import json
import pickle

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser(description="Classify the 8x8 digits with a linear model, epoch by epoch.")
parser.add_argument("--lr", type=float, default=0.01, help="constant learning rate")
parser.add_argument("--epochs", type=int, default=15)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

digits = load_digits()
x_train, x_val, y_train, y_val = train_test_split(digits.data / 16.0, digits.target, test_size=0.25,
                                                  random_state=args.seed)
model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=args.lr, random_state=args.seed)
classes = np.unique(digits.target)
rng = np.random.default_rng(args.seed)
for epoch in range(args.epochs):
    order = rng.permutation(len(x_train))
    model.partial_fit(x_train[order], y_train[order], classes=classes)
    train_acc = model.score(x_train, y_train)
    val_acc = model.score(x_val, y_val)
    # One JSON object per line on stdout: runyard keeps the numbers as metrics, whatever else it holds.
    print(json.dumps({"step": epoch, "phase": "eval", "train/acc": round(train_acc, 4), "val/acc": round(val_acc, 4)}))

with open("model.pkl", "wb") as f:  # in the working directory, as scripts do
    pickle.dump(model, f)
np.savetxt("predictions.csv", np.c_[y_val, model.predict(x_val)], fmt="%d", delimiter=",",
           header="label,predicted", comments="")

fig, ax = plt.subplots(figsize=(5, 4))
ax.imshow(confusion_matrix(y_val, model.predict(x_val)), cmap="Blues")
ax.set(title=f"val accuracy {val_acc:.3f} (lr {args.lr:g})", xlabel="predicted", ylabel="label")
plt.show()
print(f"done: val/acc {val_acc:.4f}; model.pkl and predictions.csv written")
