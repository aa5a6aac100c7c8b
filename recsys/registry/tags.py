"""Every MLflow tag key and artifact name recsys writes, defined once: what it reads back too."""

# What a model is and what made it: on its training run and on its model version.
TAG_MODE = "recsys.mode"  # "full" or "incremental"
TAG_FEATURES = "recsys.features_interval"  # the features snapshot's interval id
TAG_FEATURES_VERSION = "recsys.features_version"  # the snapshot's content hash
TAG_DATA_END = "recsys.data_last_ingested_at"  # the snapshot's last ingested_at
TAG_PARENT = "recsys.parent_version"  # a fine-tune's warm start; "" for a full retrain
TAG_RUN = "recsys.run_id"  # on a model version: the run that trained it
TAG_MODEL_ID = "recsys.model_id"  # on a model version: its LoggedModel (metrics, datasets)
TAG_TRAINING = "recsys.training"  # on a training run: the resumable training it is an attempt of
TAG_GIT_COMMIT = "recsys.git_commit"
TAG_VERSION = "recsys.version"  # on a promotion run: the version it judged
AIRFLOW = "airflow."  # airflow.dag_id, airflow.run_id, airflow.logical_date of the training run
TAG_BASELINES_SKIPPED = "baseline.skipped"  # baselines the catalogue could not afford, and why

# Metric namespaces of a run. test.* and popularity.* are copied onto its model version as tags.
TEST = "test."
POPULARITY = "popularity."
BASELINE = "baseline."
VERSION_METRICS = (TEST, POPULARITY)

# The promotion decision, on the model version and on the challenger's run.
PROMOTION = "promotion."
TAG_DECISION = "promotion.decision"  # "promoted", "rejected" or "candidate" (in an A/B test)
TAG_REASON = "promotion.reason"
TAG_COMPARED_WITH = "promotion.compared_with"
TAG_EVALUATION_SET = "promotion.evaluation_set"
TAG_METRIC = "promotion.metric"
TAG_POLICY = "promotion.policy"  # "full" or "incremental": the rule the gate applied
CRITERION = "promotion.criterion."

# Artifacts of a training run.
CONFIG_FILE = "config.json"
LINEAGE_FILE = "lineage.json"
COMPARISON_MD = "comparison.md"
COMPARISON_JSON = "comparison.json"
PLOTS = "plots"  # plots/<name>.png, each with its numbers in plots/<name>.json
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_NAME = "model"  # the logged pyfunc model

# Artifacts of a promotion run.
GATE_JSON = "gate.json"
GATE_MD = "gate.md"
