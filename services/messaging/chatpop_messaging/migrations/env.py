"""Alembic environment for the `messaging` schema."""

from chatpop_common.migrations import run_env

run_env("messaging")
