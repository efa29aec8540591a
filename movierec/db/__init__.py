"""The ratings database: schema, engine and migrations."""
