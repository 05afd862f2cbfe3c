"""Reference FastAPI service of the fastapi_ops.stack collection."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fastapi-ops-app")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
