"""The Kodak test set (24 PNG images, 768x512 / 512x768): how to get it and verify it.

The images are not stored in git; ``python -m kodak.fetch`` copies or downloads them into
``kodak/images/`` and checks every file against ``kodak/SHA256SUMS``.
"""
