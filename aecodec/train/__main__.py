"""``python -m aecodec.train``: the same as ``aecodec train``."""

from cli.main import main

if __name__ == "__main__":
    main(["train", *__import__("sys").argv[1:]], prog_name="python -m aecodec.train")
