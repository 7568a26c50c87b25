"""Train a digit classifier on scikit-learn's bundled 8x8 digits (no download), for `runyard serve`.

    runyard run -- python examples/digits/train.py          # run 1: writes model/model.pkl
    runyard model register 1:model --name digits --alias production
    runyard serve model:digits@production --handler examples/digits/serve.py:Digits

The model is written to model/ in the working directory; runyard keeps it as the run's outputs.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

digits = load_digits()
x_train, x_val, y_train, y_val = train_test_split(digits.data / 16.0, digits.target, test_size=0.25, random_state=0)
model = LogisticRegression(max_iter=2000)
model.fit(x_train, y_train)
accuracy = model.score(x_val, y_val)
print(json.dumps({"val/acc": round(float(accuracy), 4)}))  # a JSON line: runyard keeps it as a metric

Path("model").mkdir(exist_ok=True)
with open("model/model.pkl", "wb") as f:
    pickle.dump(model, f)
print(f"val accuracy {accuracy:.3f}; model written to model/model.pkl")
