"""movierec: shared core of the movie-recommendation service.

What the API (``app``) and the trainer (``trainer``) both need lives here: settings, the ratings
database schema, the model-store format and MovieLens data handling. Neither program's own code does.
The core imports nothing of theirs, nor of ``migrations`` or the ``movierec`` command (``cli``): they
build on it (tests/test_architecture.py).
"""

__version__ = "0.1.0"
