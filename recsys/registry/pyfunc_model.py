"""The MLflow pyfunc flavour of a recsys model, logged as "models from code".

MLflow runs this file to load a registered version (``mlflow models serve``, ``pyfunc.load_model``);
it is not imported by the library. Input: a DataFrame with a ``history`` column (lists of item ids,
oldest first). Output: a ``recommendations`` column (lists of item ids). Param ``k`` (default 10).
"""

import mlflow
import pandas as pd

from recsys.model.recommender import Recommender


class RecsysPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.recommender = Recommender.load(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        k = int((params or {}).get("k", 10))
        histories = model_input["history"].tolist()
        recs = [[item for item, _ in self.recommender.recommend(list(h), k)] for h in histories]
        return pd.DataFrame({"recommendations": recs})


mlflow.models.set_model(RecsysPyfunc())
