"""``python -m pacs_cli``."""

from pacs_cli.main import app


def main() -> None:
    """Run the ``pacs`` command."""
    app()


if __name__ == "__main__":
    main()
