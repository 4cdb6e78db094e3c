"""Command-line interface of aecodec (``aecodec`` console script, ``python -m aecodec``)."""
