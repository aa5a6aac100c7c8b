"""Feeding the pipeline: days of events collected, validated and turned into features."""

import datetime as dt

from recsys.data import collect, features, validate
from recsys.data.lake import Interval

START = dt.datetime(2024, 1, 1)


def ingest_days(settings, days, start=START):
    for d in days:
        iv = Interval(start + dt.timedelta(days=d), start + dt.timedelta(days=d + 1))
        collect.run(settings, iv)
        assert validate.run(settings, iv)["success"]
        features.run(settings, iv)
