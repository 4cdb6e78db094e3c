"""Rate-distortion and speed benchmarks for aecodec against standard image codecs.

- :mod:`benchmarks.metrics`  PSNR-RGB, MS-SSIM, bpp
- :mod:`benchmarks.bdrate`   Bjontegaard delta rate / PSNR (cubic)
- :mod:`benchmarks.codecs`   registry of codecs with quality sweeps (aecodec, JPEG, WebP, ...)
- :mod:`benchmarks.rd`       ``python -m benchmarks.rd``: Kodak RD sweep, JSON/CSV/markdown/plot
- :mod:`benchmarks.plot`     RD plots
- ``benchmarks/test_speed.py``  pytest-benchmark suite (``pytest benchmarks/test_speed.py``)
"""
