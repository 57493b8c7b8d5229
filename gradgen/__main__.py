"""`python -m gradgen` runs the same CLI as `gradgen`."""

from .cli import app

if __name__ == "__main__":
    app(prog_name="gradgen")
