from types import SimpleNamespace

from recsys.registry.tags import TAG_FEATURES_VERSION, TAG_MODE, TAG_PARENT
from recsys.release.pipeline import _already_finetuned


class FakeRegistry:
    def __init__(self, *tag_sets):
        self._versions = [SimpleNamespace(version=i + 1, tags=t) for i, t in enumerate(tag_sets)]

    def versions(self):
        return self._versions


def _tags(mode="incremental", parent="1", features="abc"):
    return {TAG_MODE: mode, TAG_PARENT: parent, TAG_FEATURES_VERSION: features}


def test_a_twin_fine_tune_is_found():
    reg = FakeRegistry(_tags(mode="full", parent=""), _tags())
    assert _already_finetuned(reg, "1", "abc") == "2"


def test_other_parents_snapshots_or_modes_are_not_twins():
    reg = FakeRegistry(_tags(parent="2"), _tags(features="xyz"), _tags(mode="full"))
    assert _already_finetuned(reg, "1", "abc") is None
    assert _already_finetuned(FakeRegistry(_tags()), "1", None) is None
