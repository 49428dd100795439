"""Registry alias moves for promotion and rollback (MLflow 3 aliases, no stages).

``champion`` serves labels, ``challenger`` is the newest candidate, ``previous`` the last
champion. Promotion: previous <- old champion, champion <- candidate. Rollback: champion <-
previous, previous <- the demoted champion (so a second rollback undoes the first). Each move
is a few alias writes; when one fails, the aliases already written are put back as they were
and the error is raised, so a move happens completely or not at all (short of the restore
itself failing, which is logged). Concurrent moves on the same model are not serialised: the
promotion checks that the champion is still the one the gates compared against.
"""

import logging

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from .tracking import CHAMPION, PREVIOUS

_log = logging.getLogger(__name__)


def _client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def aliases(tracking_uri: str, model_name: str) -> dict[str, str]:
    """``{alias: version}`` of a registered model (empty when the model does not exist)."""
    try:
        model = _client(tracking_uri).get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return {}
        raise
    return {alias: str(version) for alias, version in model.aliases.items()}


def move_aliases(tracking_uri: str, model_name: str, moves: dict[str, str]) -> dict[str, str]:
    """Point each alias at its version, in the given order; all or nothing.

    Args:
        moves: ``{alias: version}``.

    Returns:
        The aliases before the move (``{alias: version}``, absent where it was unset).

    Raises:
        The first failing write's error, after the aliases already written were restored.
    """
    client = _client(tracking_uri)
    before = aliases(tracking_uri, model_name)
    done = []
    try:
        for alias, version in moves.items():
            client.set_registered_model_alias(model_name, alias, str(version))
            done.append(alias)
    except BaseException:
        for alias in reversed(done):
            try:
                if alias in before:
                    client.set_registered_model_alias(model_name, alias, before[alias])
                else:
                    client.delete_registered_model_alias(model_name, alias)
            except Exception:  # keep the original error; say what could not be put back
                _log.exception("could not restore alias %r of %r to %s", alias, model_name,
                               before.get(alias, "<unset>"))
        raise
    return before


def promote_version(tracking_uri: str, model_name: str, version: str,
                    expected_champion: str | None = None) -> dict[str, str]:
    """Make ``version`` the champion and the old champion ``previous``.

    Args:
        expected_champion: the champion the gates compared against; if the champion has
            changed since, nothing moves.

    Returns:
        The aliases after the move.

    Raises:
        RuntimeError: the champion is no longer ``expected_champion``.
    """
    version = str(version)
    current = aliases(tracking_uri, model_name).get(CHAMPION)
    if expected_champion is not None and current != str(expected_champion):
        raise RuntimeError(f"the champion of {model_name!r} is version {current}, not "
                           f"{expected_champion} as when the gates were evaluated; "
                           f"nothing moved, evaluate the promotion again")
    if current == version:
        return aliases(tracking_uri, model_name)
    moves = {PREVIOUS: current} if current is not None else {}
    moves[CHAMPION] = version
    move_aliases(tracking_uri, model_name, moves)
    return aliases(tracking_uri, model_name)


def rollback_champion(tracking_uri: str, model_name: str) -> dict[str, str]:
    """Swap champion and previous: the previous champion serves again.

    Returns:
        ``{"restored": version, "demoted": version}``.

    Raises:
        ValueError: there is no ``previous`` (or no ``champion``) to swap.
    """
    current = aliases(tracking_uri, model_name)
    if PREVIOUS not in current or CHAMPION not in current:
        raise ValueError(f"model {model_name!r} has no {PREVIOUS!r} and {CHAMPION!r} aliases "
                         f"to swap (aliases: {current or 'none'}); nothing to roll back to")
    restored, demoted = current[PREVIOUS], current[CHAMPION]
    move_aliases(tracking_uri, model_name, {CHAMPION: restored, PREVIOUS: demoted})
    return {"restored": restored, "demoted": demoted}


def set_version_tags(tracking_uri: str, model_name: str, version: str, tags: dict[str, str],
                     *, replace_prefix: str | None = None) -> None:
    """Set tags on a model version; with ``replace_prefix``, first drop its tags under that
    prefix that ``tags`` does not set (stale results of an earlier evaluation)."""
    client = _client(tracking_uri)
    version = str(version)
    if replace_prefix:
        old = client.get_model_version(model_name, version).tags
        for key in old:
            if key.startswith(replace_prefix) and key not in tags:
                client.delete_model_version_tag(model_name, version, key)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, str(value))
