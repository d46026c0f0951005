"""Data contracts shared by the feature pipeline and the trainer (imports nothing of either)."""
from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.tables import SCHEMA_VERSION

__all__ = ["ContractError", "Workspace", "SCHEMA_VERSION"]
