"""``python -m noisynn``: the command-line tool."""

from noisynn.cli.main import app

if __name__ == "__main__":
    app()
