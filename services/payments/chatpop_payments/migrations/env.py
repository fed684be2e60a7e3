"""Alembic environment for the payments schema."""

from chatpop_common.migrations import run_env

run_env("payments")
