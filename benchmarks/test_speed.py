"""Speed and memory benchmarks (pytest-benchmark); not part of the default ``pytest tests/`` run.

Run::

    .venv/bin/python -m pytest benchmarks/test_speed.py --benchmark-only
    .venv/bin/python -m pytest benchmarks/test_speed.py --benchmark-only -k "jpeg or cold"

Uses one 768x512 Kodak image (``kodim23.png`` from ``kodak/images`` or ``../shared/kodak``) and
skips when it is absent. Torch runs with ``AECODEC_BENCH_THREADS`` threads (default 1, so the
numbers are comparable across machines and do not disturb a training run; 0 = torch's default),
and ``AECODEC_BENCH_MODEL`` names the model (default: the default model).
Peak memory (max RSS of a fresh process) is reported in each benchmark's ``extra_info``.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

ROOT = Path(__file__).resolve().parent.parent
IMAGE_NAME = "kodim23.png"  # 768x512
THREADS = int(os.environ.get("AECODEC_BENCH_THREADS", "1"))
ROUNDS = int(os.environ.get("AECODEC_BENCH_ROUNDS", "3"))
MODEL = os.environ.get("AECODEC_BENCH_MODEL") or None  # default: the default model


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if THREADS > 0:
        env["OMP_NUM_THREADS"] = str(THREADS)
    return env


@pytest.fixture(scope="module")
def kodak_file() -> Path:
    from kodak.fetch import find_image

    path = find_image(IMAGE_NAME)
    if path is not None:
        return path
    pytest.skip(
        f"{IMAGE_NAME} not found in kodak/images or ../shared/kodak; run python -m kodak.fetch"
    )


@pytest.fixture(scope="module")
def rgb(kodak_file: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(kodak_file) as im:
        arr = np.array(im.convert("RGB"))
    assert arr.shape == (512, 768, 3)
    return arr


@pytest.fixture(scope="module")
def aec():
    """(Codec, qualities), built once and warmed up."""
    try:
        import aecodec

        qualities = list(aecodec.qualities(MODEL))
        if THREADS > 0:
            import torch

            from aecodec import runtime

            torch.set_num_threads(THREADS)
            runtime.set_threads(THREADS)
        codec = aecodec.Codec(MODEL)
        warm = np.full((64, 64, 3), 128, np.uint8)
        codec.decompress(codec.compress(warm, quality=qualities[0]))
    except Exception as exc:
        pytest.skip(f"aecodec not usable: {type(exc).__name__}: {exc}")
    return codec, qualities


def _pick(qualities: list[int], which: str) -> int:
    return qualities[0] if which == "lowest" else qualities[-1]


@pytest.mark.parametrize("runtime", ["auto", "torch"])
@pytest.mark.parametrize("which", ["lowest", "highest"])
def test_aecodec_encode(benchmark, aec, rgb, which, runtime):
    """Encode with the default runtime (ONNX Runtime and numpy where the model ships an
    analysis graph) and with torch, side by side."""
    import aecodec

    codec, qualities = aec
    q = _pick(qualities, which)
    encoder = codec if runtime == "auto" else aecodec.Codec(MODEL, runtime=runtime)
    encoder.compress(rgb, quality=q)  # warm-up (code lengths of this quality)
    benchmark.group = "aecodec encode 768x512"
    data = benchmark.pedantic(encoder.compress, args=(rgb,), kwargs={"quality": q}, rounds=ROUNDS)
    bpp = 8 * len(data) / rgb[..., 0].size
    benchmark.extra_info.update(quality=q, bytes=len(data), bpp=bpp, runtime=encoder.encodes_with)


@pytest.mark.parametrize("runtime", ["auto", "torch"])
@pytest.mark.parametrize("which", ["lowest", "highest"])
def test_aecodec_decode(benchmark, aec, rgb, which, runtime):
    """Decode with the default runtime (ONNX Runtime where the model ships a graph) and with
    torch, side by side."""
    import aecodec

    codec, qualities = aec
    q = _pick(qualities, which)
    data = codec.compress(rgb, quality=q)
    decoder = codec if runtime == "auto" else aecodec.Codec(MODEL, runtime=runtime)
    decoder.decompress(data)  # warm-up
    benchmark.group = "aecodec decode 768x512"
    img = benchmark.pedantic(decoder.decompress, args=(data,), rounds=ROUNDS)
    assert img.size == (768, 512)
    benchmark.extra_info.update(quality=q, bytes=len(data), runtime=decoder.decodes_with)


def _jpeg_encode(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def _jpeg_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def test_jpeg_encode(benchmark, rgb):
    benchmark.group = "jpeg q75 768x512"
    data = benchmark(_jpeg_encode, rgb)
    benchmark.extra_info["bytes"] = len(data)


def test_jpeg_decode(benchmark, rgb):
    data = _jpeg_encode(rgb)
    benchmark.group = "jpeg q75 768x512"
    out = benchmark(_jpeg_decode, data)
    assert out.shape == rgb.shape


@pytest.fixture(scope="module")
def factorized():
    """CompressAI bmshj2018-factorized, quality 8 architecture (N=192, M=320).

    Weights are randomly initialised (no pretrained download here): the timing reference is the
    architecture's compute and entropy coding, which do not depend on trained values.
    """
    zoo = pytest.importorskip("compressai.zoo")
    import torch

    if THREADS > 0:
        torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    net = zoo.bmshj2018_factorized(quality=8, pretrained=False).eval()
    net.update(force=True)
    return net


def _tensor(rgb: np.ndarray):
    import torch

    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255.0


def test_compressai_factorized_encode(benchmark, factorized, rgb):
    import torch

    x = _tensor(rgb)
    benchmark.group = "compressai bmshj2018-factorized q8 arch 768x512"
    with torch.no_grad():
        out = benchmark.pedantic(factorized.compress, args=(x,), rounds=ROUNDS)
    benchmark.extra_info["bytes"] = sum(len(s[0]) for s in out["strings"])


def test_compressai_factorized_decode(benchmark, factorized, rgb):
    import torch

    x = _tensor(rgb)
    with torch.no_grad():
        out = factorized.compress(x)
        benchmark.group = "compressai bmshj2018-factorized q8 arch 768x512"
        rec = benchmark.pedantic(
            factorized.decompress, args=(out["strings"], out["shape"]), rounds=ROUNDS
        )
    assert rec["x_hat"].shape == x.shape


# ------------------------------------------------------------------ cold start (subprocesses)


def _cli_command(src: Path, dst: Path, command: str = "compress") -> list[str]:
    exe = ROOT / ".venv" / "bin" / "aecodec"
    if exe.exists():
        return [str(exe), command, str(src), "-o", str(dst), "--force"]
    return [sys.executable, "-m", "aecodec.cli.main", command, str(src), "-o", str(dst), "--force"]


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=ROOT, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({res.returncode}): {res.stderr[-2000:]}")


def test_cold_start_cli_compress(benchmark, kodak_file, aec, tmp_path):
    cmd = _cli_command(kodak_file, tmp_path / "out.aec")
    benchmark.group = "cold start"
    benchmark.pedantic(_run, args=(cmd,), rounds=ROUNDS, warmup_rounds=1)
    assert (tmp_path / "out.aec").stat().st_size > 0


def test_cold_start_cli_decompress(benchmark, kodak_file, aec, tmp_path):
    """`aecodec decompress` of a top-quality file in a fresh process (issue 18: <= 0.75x
    `python -c "import torch"`; with an ONNX graph it never imports torch)."""
    codec, qualities = aec
    src = tmp_path / "in.aec"
    src.write_bytes(codec.compress(kodak_file, quality=qualities[-1]))
    cmd = _cli_command(src, tmp_path / "out.png", "decompress")
    benchmark.group = "cold start"
    benchmark.pedantic(_run, args=(cmd,), rounds=ROUNDS, warmup_rounds=1)
    assert (tmp_path / "out.png").stat().st_size > 0


def test_cold_start_import_aecodec(benchmark):
    benchmark.group = "cold start"
    benchmark.pedantic(_run, args=([sys.executable, "-c", "import aecodec"],), rounds=ROUNDS)


def test_cold_start_import_torch(benchmark):
    benchmark.group = "cold start"
    benchmark.pedantic(_run, args=([sys.executable, "-c", "import torch"],), rounds=ROUNDS)


# ------------------------------------------------------------------ peak memory

_MEM_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "torch":
        import torch
    elif mode == "encode":
        import aecodec
        aecodec.compress(path, aecodec.qualities()[-1])
    else:
        import aecodec
        with open(path, "rb") as f:
            aecodec.decompress(f.read())
    try:  # Linux: the peak of this process only (ru_maxrss would include the parent's at fork)
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except OSError:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kib = kib // 1024 if sys.platform == "darwin" else kib
    print(kib)
    """
)


def _max_rss_mib(mode: str, path: Path) -> float:
    res = subprocess.run(
        [sys.executable, "-c", _MEM_SCRIPT, mode, str(path)],
        env=_env(),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"memory probe {mode} failed: {res.stderr[-2000:]}")
    return int(res.stdout.strip().splitlines()[-1]) / 1024.0


@pytest.mark.parametrize("mode", ["torch", "encode", "decode"])
def test_peak_memory(benchmark, kodak_file, rgb, mode, request, tmp_path):
    """Peak RSS (VmHWM) of a fresh process: ``import torch``; encode / decode at top quality."""
    path = kodak_file
    if mode != "torch":
        codec, qualities = request.getfixturevalue("aec")  # skips when aecodec is not usable
        if mode == "decode":
            path = tmp_path / "top.aec"
            path.write_bytes(codec.compress(rgb, quality=qualities[-1]))
    benchmark.group = "peak memory (max_rss_mib in extra_info)"
    mib = benchmark.pedantic(_max_rss_mib, args=(mode, path), rounds=1, iterations=1)
    benchmark.extra_info["max_rss_mib"] = round(mib, 1)
    assert mib > 0
