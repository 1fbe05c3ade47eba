"""``python -m deploykit`` (also what torchrun runs)."""

from deploykit.cli.main import entry

if __name__ == "__main__":
    entry()
