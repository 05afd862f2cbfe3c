"""Source-checkout shim: the real config ships in the package (app/gunicorn_conf.py).

gunicorn -c gunicorn.conf.py app.main:app  ==  gunicorn -c python:app.gunicorn_conf app.main:app
"""

# Gunicorn reads its settings from this file's names: re-export all of the package's.
from app.gunicorn_conf import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from app.gunicorn_conf import child_exit, on_exit, on_starting  # noqa: F401
