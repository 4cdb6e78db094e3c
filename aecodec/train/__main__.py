"""``python -m aecodec.train``: the same as ``aecodec train`` (also under ``torchrun``)."""

import sys

from cli.main import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]], prog_name="python -m aecodec.train")
