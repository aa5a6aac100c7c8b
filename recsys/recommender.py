"""``Recommender``'s import path until 7b46c2f, kept: every model version registered until then
carries a ``pyfunc_model.py`` that imports it from here. It lives in
``recsys.model.recommender``."""

from recsys.model.recommender import Recommender

__all__ = ["Recommender"]
