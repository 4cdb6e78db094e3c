"""``python -m aecodec``: the command-line interface (see ``aecodec --help``)."""

from cli.main import main

if __name__ == "__main__":
    main(prog_name="aecodec")
