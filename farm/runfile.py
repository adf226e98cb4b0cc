"""Reading a run's run.json: a JSON object whose config matches its config hash, checked before anything is
planned from it (no data opened, no memory sized by its values): one RunError line naming run.json otherwise."""

from __future__ import annotations

from farm.config import RunConfig, config_hash, from_dict
from farm.errors import ConfigError, RunError
from farm.shards import RUN_JSON
from farm.storage import RunDir


def read_run_json(run: RunDir) -> dict:
    """run.json as a dict: RunError naming it when it is missing, unreadable or not a JSON object."""
    if not run.is_file(RUN_JSON):
        raise RunError(f"{run.path(RUN_JSON)}: not found; is {run.uri!r} a shadowfarm run?")
    try:
        saved = run.read_json(RUN_JSON)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"{run.path(RUN_JSON)}: unreadable ({exc}); the run's config is lost") from None
    if not isinstance(saved, dict):
        raise RunError(f"{run.path(RUN_JSON)}: expected a JSON object (as shadowfarm writes it), "
                       f"got a {type(saved).__name__}; the run's config is lost")
    return saved


def run_config(run: RunDir) -> tuple[dict, RunConfig]:
    """(run.json, its config), the config checked against run.json's config hash before it is used."""
    saved = read_run_json(run)
    try:
        cfg = from_dict(saved["config"])
    except KeyError as exc:
        raise RunError(f"{run.path(RUN_JSON)}: missing {exc}; not written by shadowfarm?") from None
    except ConfigError as exc:
        raise RunError(f"{run.path(RUN_JSON)}: {exc}") from None
    if config_hash(cfg) != saved.get("config_hash"):
        raise RunError(f"{run.path(RUN_JSON)}: its config does not match its config_hash (edited after the run "
                       "was made?); restore it, or train a new run from the edited config")
    return saved, cfg
