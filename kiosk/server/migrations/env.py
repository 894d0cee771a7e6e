"""Alembic's entry point: migrations run on the connection kiosk.server.migrate hands over.

Never run through the ``alembic`` command: ``kiosk-server db upgrade`` (and every start)
runs them with the server's own engine, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from alembic import context

from kiosk.server.store import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters tables by copying them
with context.begin_transaction():
    context.run_migrations()
