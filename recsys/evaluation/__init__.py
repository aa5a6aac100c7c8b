"""The evaluation plane: full-ranking metrics, baselines and the plots of a run's report."""
