"""Alembic migrations of the decision store, shipped in the package; run them with
`loan_default.services.decisions.migrate.upgrade`, never with an `alembic.ini`."""
