"""Alembic migrations, one version table per service schema.

Each service keeps an Alembic script directory (`<package>/migrations`) whose env.py calls
`run_env(schema)`; `upgrade(...)` applies it programmatically (used by `make run`, tests and the
Helm migrations Job through `python -m chatpop_common.migrate`).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import create_engine, pool, text


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def alembic_config(script_location: Path, database_url: str, schema: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    config.attributes["schema"] = schema
    return config


def upgrade(script_location: Path, database_url: str, schema: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(script_location, database_url, schema), revision)


def run_env(schema: str) -> None:
    """Body of every service's env.py: online migrations inside the service's own schema."""
    config = context.config
    engine = create_engine(str(config.get_main_option("sqlalchemy.url")), poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        connection.execute(text(f'SET search_path TO "{schema}", public'))
        connection.commit()
        context.configure(
            connection=connection,
            version_table="alembic_version",
            version_table_schema=schema,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
