"""movierec HTTP API (FastAPI). Entry point: :func:`app.main.create_app`."""
