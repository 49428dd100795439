"""Alias semantics of the registry (library level, real sqlite store).

Registration sets no alias: a version is judged first. A verdict moves ``challenger`` to the
newest judged version and, when it is "promote", ``previous``/``champion``. A rollback clears
``challenger`` when it points at the demoted champion, so a plain promote cannot bring it back.
"""

import pytest
from mlflow import MlflowClient

from decflow.registry import aliases as registry
from decflow.registry import versions

pytestmark = pytest.mark.slow  # an MLflow store


@pytest.fixture()
def model(store_uri, request, tmp_path):
    """(store, name) of a model with versions 1..3 and no aliases."""
    client = MlflowClient(store_uri, registry_uri=store_uri)
    name = request.node.name.replace("[", "-").replace("]", "")
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, source=(tmp_path / "model").as_uri())
    return store_uri, name


def test_a_promote_verdict_moves_champion_previous_and_challenger(model):
    uri, m = model
    assert registry.apply_verdict(uri, m, "1", promote=True, expected_champion=None) == {
        "champion": "1", "challenger": "1"}
    assert registry.apply_verdict(uri, m, "2", promote=True, expected_champion="1") == {
        "champion": "2", "challenger": "2", "previous": "1"}


def test_a_reject_verdict_moves_only_challenger_and_only_forward(model):
    uri, m = model
    registry.apply_verdict(uri, m, "2", promote=True, expected_champion=None)
    assert registry.apply_verdict(uri, m, "3", promote=False, expected_champion="2") == {
        "champion": "2", "challenger": "3"}
    # judging an older version again leaves challenger on the newest judged one
    assert registry.apply_verdict(uri, m, "1", promote=False, expected_champion="2") == {
        "champion": "2", "challenger": "3"}


def test_a_verdict_against_a_champion_that_changed_moves_nothing(model):
    uri, m = model
    registry.apply_verdict(uri, m, "1", promote=True, expected_champion=None)
    before = registry.aliases(uri, m)
    with pytest.raises(RuntimeError, match=r"champion of .* is version 1, not none"):
        registry.apply_verdict(uri, m, "2", promote=True, expected_champion=None)
    with pytest.raises(RuntimeError, match=r"is version 1, not 3 as when the gates"):
        registry.apply_verdict(uri, m, "2", promote=False, expected_champion="3")
    assert registry.aliases(uri, m) == before


def test_rollback_clears_challenger_when_it_is_the_demoted_version(model):
    uri, m = model
    registry.apply_verdict(uri, m, "1", promote=True, expected_champion=None)
    registry.apply_verdict(uri, m, "2", promote=True, expected_champion="1")
    assert registry.rollback_champion(uri, m) == {"restored": "1", "demoted": "2"}
    assert registry.aliases(uri, m) == {"champion": "1", "previous": "2"}
    assert versions.get_version(uri, m, "challenger") is None


def test_rollback_keeps_a_newer_challenger(model):
    uri, m = model
    registry.apply_verdict(uri, m, "1", promote=True, expected_champion=None)
    registry.apply_verdict(uri, m, "2", promote=True, expected_champion="1")
    registry.apply_verdict(uri, m, "3", promote=False, expected_champion="2")
    registry.rollback_champion(uri, m)
    assert registry.aliases(uri, m) == {"champion": "1", "previous": "2", "challenger": "3"}


def test_a_failed_write_during_rollback_restores_the_cleared_challenger(model, monkeypatch):
    uri, m = model
    registry.apply_verdict(uri, m, "1", promote=True, expected_champion=None)
    registry.apply_verdict(uri, m, "2", promote=True, expected_champion="1")
    before = registry.aliases(uri, m)
    real = MlflowClient.set_registered_model_alias

    def flaky(self, name, alias, version):
        if alias == "previous":
            raise OSError("registry went away")
        return real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", flaky)
    with pytest.raises(OSError, match="went away"):
        registry.rollback_champion(uri, m)
    monkeypatch.undo()
    assert registry.aliases(uri, m) == before
