"""Long fuzz run of the decoder (documented in docs/SECURITY.md).

    .venv/bin/python scripts/fuzz.py --examples 20000

Feeds the full decoder (container, entropy decoder, alpha inflater, synthesis) with
(a) random byte strings, (b) valid files with random byte mutations, truncations and
insertions, with and without a recomputed CRC. Every input must give FormatError /
ModelError or a well-formed image; anything else is a failure and is saved to fuzz-crashes/.
Prints the number of inputs run and of failures.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from aecodec import FormatError, ModelError, container
    from aecodec.codec import Codec

    codec = Codec(str(ROOT / "tests" / "golden" / "tiny.safetensors"), tile_size=32)
    rng = np.random.default_rng(args.seed)
    seeds = []
    for mode_channels in (1, 3, 4):
        arr = rng.integers(
            0, 256, (int(rng.integers(1, 60)), int(rng.integers(1, 60)), mode_channels)
        )
        seeds.append(
            codec.compress(
                arr.astype(np.uint8).squeeze(-1) if mode_channels == 1 else arr.astype(np.uint8),
                quality=2,
            )
        )
    crash_dir = ROOT / "fuzz-crashes"
    failures = 0
    t0 = time.time()
    for i in range(args.examples):
        kind = i % 4
        if kind == 0:
            data = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        else:
            raw = bytearray(seeds[i % len(seeds)])
            for _ in range(int(rng.integers(1, 6))):
                op = rng.integers(0, 3)
                pos = int(rng.integers(0, len(raw)))
                if op == 0:
                    raw[pos] = int(rng.integers(0, 256))
                elif op == 1:
                    del raw[pos:]
                    if not raw:
                        break
                else:
                    raw[pos:pos] = bytes(
                        rng.integers(0, 256, int(rng.integers(1, 8)), dtype=np.uint8)
                    )
            data = bytes(raw)
            if kind >= 2 and len(data) > 4:
                data = data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))
        try:
            img = codec.decompress(data, max_pixels=1 << 20)
            h = container.read_header(data, max_pixels=1 << 20)
            if img.size != (h.width, h.height) or img.mode != h.mode:
                raise AssertionError("decoded image does not match its header")
        except (FormatError, ModelError):
            pass
        except Exception as exc:  # a fuzz harness records every other failure
            failures += 1
            crash_dir.mkdir(exist_ok=True)
            (crash_dir / f"crash-{i}.aec").write_bytes(data)
            print(f"input {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"fuzz: {args.examples} inputs, {failures} failures, {time.time() - t0:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
