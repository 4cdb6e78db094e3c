"""Training: data sampling, the rate-distortion loop, export to bundled weights."""
