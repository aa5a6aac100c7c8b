"""recsys: keeps a transformer recommender fresh. Importing this package is cheap by design."""

__version__ = "0.1.0"
