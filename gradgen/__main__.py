"""`python -m gradgen` runs the same CLI as `gradgen`."""

from .cli import app

app(prog_name="gradgen")
