"""Model servers: a handler class in the user's code, served over HTTP with a demo page.

    from runyard.serve import Image, Input, Scores

    class Digits:
        examples = [{"image": [[0, 255, ...], ...]}]         # one-click inputs on the demo page

        def load(self, model_dir):                          # once, before the first request
            self.model = joblib.load(f"{model_dir}/model.joblib")

        def predict(self, image: Image = Input(width=8, height=8, mode="L")) -> Scores:
            return dict(zip(self.model.classes_, self.model.predict_proba([...])[0]))

``runyard serve RUN:PATH --handler serve.py:Digits`` serves it (``docs/serving.md``). The types a
``predict`` takes and returns come from its annotations (``signature.py``); importing this module
loads nothing heavy, so a training script may import it too.
"""

from runyard.serve.declare import Image, Input, Scores, Table

__all__ = ["Image", "Input", "Scores", "Table"]
