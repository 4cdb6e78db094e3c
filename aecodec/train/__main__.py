"""``python -m aecodec.train``: an entry point of the command line, the same as ``aecodec train``
(also under ``torchrun``).

Only run by ``python -m``; ``import aecodec.train`` never imports it, so the library does not
depend on its command line (:mod:`aecodec.cli`).
"""

import sys

from aecodec.cli.main import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]], prog_name="python -m aecodec.train")
