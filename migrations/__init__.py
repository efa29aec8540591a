"""Alembic migrations of the ratings database (shipped inside the package so installs can upgrade)."""
