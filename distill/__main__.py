"""``python -m distill``: see ``distill.cli``."""

from distill.cli import app

if __name__ == "__main__":
    app()
