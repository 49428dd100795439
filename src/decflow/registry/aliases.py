"""Registry alias moves for promotion and rollback (MLflow 3 aliases, no stages).

``champion`` serves labels, ``challenger`` is the newest *judged* candidate, ``previous`` the
last champion. Registration sets no alias (the version is tagged ``promotion.decision`` =
``pending``); only a verdict of the promotion gate moves one (``apply_verdict``): challenger <-
the judged version when it is newer than the current challenger, and on "promote" previous <-
old champion, champion <- candidate. So a version that no gate judged (its run died between
registration and the gate) holds no alias. Rollback: champion <- previous, previous <- the
demoted champion (so a second rollback undoes the first), and challenger is cleared when it
points at the demoted version, so a plain promote cannot put it back.

Each move is a few alias writes; when one fails, the aliases already written are put back as
they were and the error is raised, so a move happens completely or not at all (short of the
restore itself failing, which is logged). A verdict checks that the champion is still the one
the gates compared against (``Conflict`` otherwise); the tasks run the check and the moves
under a lock (``decflow.tasks.runtime.registry_lock``), so concurrent moves cannot interleave.
"""

import logging

from mlflow.exceptions import MlflowException

from decflow.errors import Conflict
from decflow.registry.client import mlflow_client
from decflow.registry.versions import CHALLENGER, CHAMPION, PREVIOUS

_log = logging.getLogger(__name__)


def aliases(tracking_uri: str, model_name: str) -> dict[str, str]:
    """``{alias: version}`` of a registered model (empty when the model does not exist)."""
    try:
        model = mlflow_client(tracking_uri).get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return {}
        raise
    return {alias: str(version) for alias, version in model.aliases.items()}


def move_aliases(tracking_uri: str, model_name: str, moves: dict[str, str | None]
                 ) -> dict[str, str]:
    """Point each alias at its version, in the given order; all or nothing.

    Args:
        moves: ``{alias: version}``; a version of None deletes the alias (if set).

    Returns:
        The aliases before the move (``{alias: version}``, absent where it was unset).

    Raises:
        The first failing write's error, after the aliases already written were restored.
    """
    client = mlflow_client(tracking_uri)
    before = aliases(tracking_uri, model_name)
    done = []
    try:
        for alias, version in moves.items():
            if version is None:
                if alias not in before:
                    continue
                client.delete_registered_model_alias(model_name, alias)
            else:
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


def apply_verdict(tracking_uri: str, model_name: str, version: str, *, promote: bool,
                  expected_champion: str | None) -> dict[str, str]:
    """Move the aliases after a promotion gate judged ``version``; all or nothing.

    ``challenger`` <- ``version`` when there is no challenger or ``version`` is newer (the
    newest judged candidate, whatever its verdict); when ``promote``: ``previous`` <- the
    champion (if any and not ``version``), ``champion`` <- ``version``.

    Args:
        promote: the verdict is "promote".
        expected_champion: the champion the gates compared against (None: there was none).

    Returns:
        The aliases after the move.

    Raises:
        Conflict: the champion is no longer ``expected_champion``; nothing moved.
    """
    version = str(version)
    current = aliases(tracking_uri, model_name)
    champion = current.get(CHAMPION)
    expected = None if expected_champion is None else str(expected_champion)
    if champion != expected:
        raise Conflict(f"the champion of {model_name!r} is version {champion or 'none'}, "
                       f"not {expected or 'none'} as when the gates were evaluated; "
                       f"nothing moved, evaluate the promotion again")
    moves: dict[str, str | None] = {}
    challenger = current.get(CHALLENGER)
    if challenger is None or int(version) > int(challenger):
        moves[CHALLENGER] = version
    if promote and champion != version:
        if champion is not None:
            moves[PREVIOUS] = champion
        moves[CHAMPION] = version
    if moves:
        move_aliases(tracking_uri, model_name, moves)
    return aliases(tracking_uri, model_name)


def rollback_champion(tracking_uri: str, model_name: str) -> dict[str, str]:
    """Swap champion and previous: the previous champion serves again; ``challenger`` is
    cleared when it points at the demoted version.

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
    moves: dict[str, str | None] = {}
    if current.get(CHALLENGER) == demoted:
        moves[CHALLENGER] = None  # else a plain `promote` would gate it, and put it back
    moves.update({CHAMPION: restored, PREVIOUS: demoted})
    move_aliases(tracking_uri, model_name, moves)
    return {"restored": restored, "demoted": demoted}


def set_version_tags(tracking_uri: str, model_name: str, version: str, tags: dict[str, str],
                     *, replace_prefix: str | None = None) -> None:
    """Set tags on a model version; with ``replace_prefix``, first drop its tags under that
    prefix that ``tags`` does not set (stale results of an earlier evaluation)."""
    client = mlflow_client(tracking_uri)
    version = str(version)
    if replace_prefix:
        old = client.get_model_version(model_name, version).tags
        for key in old:
            if key.startswith(replace_prefix) and key not in tags:
                client.delete_model_version_tag(model_name, version, key)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, str(value))
