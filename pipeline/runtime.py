"""Process settings the offline stack needs, applied as defaults (the user's values win)."""
from __future__ import annotations

import os
from pathlib import Path

OFFLINE_DEFAULTS = {
    "NO_ALBUMENTATIONS_UPDATE": "1",  # albumentations otherwise checks PyPI for a new version
    "HF_HUB_OFFLINE": "1",  # models come from local paths; never reach for the hub
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


def configure_environment(prefect_home: str | os.PathLike[str] | None = None) -> None:
    """Set offline defaults and a project-local PREFECT_HOME before any library reads them."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if "PREFECT_HOME" not in os.environ:
        os.environ["PREFECT_HOME"] = str(Path(prefect_home or Path.cwd() / ".prefect").resolve())
