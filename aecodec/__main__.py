"""``python -m aecodec``: an entry point of the command line (the same as ``aecodec``).

Only run by ``python -m``; ``import aecodec`` never imports it, so the library does not
depend on its command line (:mod:`aecodec.cli`).
"""

from aecodec.cli.main import main

if __name__ == "__main__":
    main(prog_name="aecodec")
