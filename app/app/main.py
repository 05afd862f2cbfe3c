"""ASGI entry point: `gunicorn -c python:app.gunicorn_conf app.main:app`."""

from app.factory import create_app

app = create_app()
