"""Parallel use: forked workers do not hang; the batch API on local processes and on Dask."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from helpers import ROOT, smooth_image
from PIL import Image

import aecodec
from aecodec import batch

_FORK_SCRIPT = """
import multiprocessing as mp, sys
import numpy as np
import aecodec
codec = aecodec.Codec(sys.argv[1], tile_size=64)
paths = sys.argv[2:]
serial = [codec.compress(p) for p in paths]  # the parent uses torch before forking
with mp.get_context("fork").Pool(2) as pool:
    assert pool.map(codec.compress, paths) == serial
print("ok")
"""


def test_forked_pool_does_not_hang(tmp_path: Path, tiny_model: str) -> None:
    """`multiprocessing.Pool(2).map(codec.compress, paths)` with Linux's fork start method."""
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(smooth_image(90, 70, seed=i)).save(paths[-1])
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, tiny_model, *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,  # it used to hang forever
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


_FORK_SESSIONS_SCRIPT = """
import multiprocessing as mp, threading
import aecodec
from PIL import Image
codec = aecodec.Codec()  # ships ONNX graphs: the parent's sessions exist before the fork
photo = Image.open(sys.argv[1]).convert("RGB").crop((0, 0, 96, 64))
data = codec.compress(photo, quality=2)
want = codec.decompress(data).tobytes()
held, release = threading.Event(), threading.Event()
def hold():
    with codec._net_lock:  # another thread of the parent holds the codec's lock at the fork
        held.set()
        release.wait()
holder = threading.Thread(target=hold)
holder.start()
held.wait()
def work(i):
    if i % 2:
        return codec.compress(photo, quality=2) == data
    return codec.decompress(data).tobytes() == want
with mp.get_context("fork").Pool(2) as pool:
    release.set()
    assert all(pool.map(work, range(6)))
holder.join()
print("ok")
""".replace("import multiprocessing", "import sys, multiprocessing")


def test_forked_workers_make_their_own_sessions_and_locks(tmp_path: Path) -> None:
    """Forked after the parent encoded and decoded with ONNX Runtime, and while a parent thread
    held the codec's lock: the workers code the same bytes, and neither hangs (CI once timed
    out on this)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    photo = ROOT / "aecodec" / "data" / "kodim23-384x256.png"
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_SESSIONS_SCRIPT, str(photo)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_unpickling_reuses_the_loaded_codec(tiny_codec) -> None:
    import pickle

    assert pickle.loads(pickle.dumps(tiny_codec)) is tiny_codec


def _inputs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"img{i}.png")
        Image.fromarray(smooth_image(40 + 8 * i, 32, seed=i)).save(paths[-1])
    return paths


def test_local_process_batch_results_errors_and_resume(tmp_path: Path, tiny_codec) -> None:
    paths = _inputs(tmp_path / "in", 3)
    (tmp_path / "in" / "bad.png").write_text("not an image")
    jobs = batch.plan([*paths, tmp_path / "in" / "bad.png"], tmp_path / "out")
    results = {r.src.name: r for r in batch.compress_files(jobs, codec=tiny_codec, workers=2)}
    assert {n: r.status for n, r in results.items()} == {
        "img0.png": "done",
        "img1.png": "done",
        "img2.png": "done",
        "bad.png": "failed",
    }
    assert "bad.png" in (results["bad.png"].error or "")
    for p in paths:
        out = tmp_path / "out" / (p.stem + ".aec")
        assert out.read_bytes() == tiny_codec.compress(p)
        assert results[p.name].bytes == out.stat().st_size
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == [
        "img0.aec",
        "img1.aec",
        "img2.aec",
    ]
    again = list(batch.compress_files(jobs[:3], codec=tiny_codec, workers=1))
    assert [r.status for r in again] == ["skipped"] * 3


def test_dask_local_cluster(tmp_path: Path, tiny_codec) -> None:
    distributed = pytest.importorskip("distributed")
    paths = _inputs(tmp_path / "in", 2)
    jobs = batch.plan(paths, tmp_path / "out")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pool = client.get_executor()
        results = list(batch.compress_files(jobs, codec=tiny_codec, executor=pool))
        naming = aecodec.output.decompressed_name
        back = batch.plan([dst for _, dst in jobs], tmp_path / "dec", name=naming)
        decoded = list(batch.decompress_files(back, codec=tiny_codec, executor=pool))
    assert [r.status for r in results] == ["done", "done"]
    for src, dst in jobs:
        assert dst.read_bytes() == tiny_codec.compress(src)
    assert [r.status for r in decoded] == ["done", "done"]
    with Image.open(tmp_path / "dec" / "img1.aec.png") as img:
        assert img.size == (48, 32)


def test_batch_applies_limits_reports_warnings_and_never_overwrites(
    tmp_path: Path, tiny_codec
) -> None:
    """Any Executor (here threads: no process start-up); workers read as aecodec.files does."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    folder = tmp_path / "in"
    paths = _inputs(folder, 2)  # 40x32 and 48x32
    deep = folder / "deep.png"
    Image.fromarray(smooth_image(40, 32, 1)[..., 0].astype(np.uint16) * 257).save(deep)
    big = folder / "big.png"
    Image.fromarray(smooth_image(80, 64)).save(big)
    jobs = batch.plan([*paths, deep, big], tmp_path / "out")
    with ThreadPoolExecutor(2) as pool:
        results = {
            r.src.name: r
            for r in batch.compress_files(
                jobs, codec=tiny_codec, executor=pool, max_pixels=2000, psnr=True
            )
        }
    assert {n: r.status for n, r in results.items()} == {
        "img0.png": "done",
        "img1.png": "done",
        "deep.png": "done",
        "big.png": "failed",
    }
    assert "exceeds the limit of 2000 pixels" in (results["big.png"].error or "")
    # reported once, although measuring the PSNR reads the image again
    assert results["deep.png"].warnings == (
        "16-bit image reduced to 8 bits per channel for coding",
    )
    assert results["img0.png"].warnings == ()
    assert not (tmp_path / "out" / "big.aec").exists()

    # an output that appears while its job runs is never replaced: skipped (resume) or failed
    def race(dst: Path, data: bytes) -> None:
        dst.write_bytes(b"theirs")
        batch._write_new(dst, data)

    again = batch.plan([big], tmp_path / "race")
    with ThreadPoolExecutor(1) as pool:
        (skipped,) = batch.compress_files(again, codec=tiny_codec, executor=pool, write=race)
        assert skipped.status == "skipped"
        (tmp_path / "race" / "big.aec").unlink()
        (failed,) = batch.compress_files(
            again, codec=tiny_codec, executor=pool, write=race, skip_existing=False
        )
    assert failed.status == "failed" and "exists" in (failed.error or "")
    assert (tmp_path / "race" / "big.aec").read_bytes() == b"theirs"
    assert [p.name for p in (tmp_path / "race").iterdir()] == ["big.aec"]  # no temporary file


def test_batch_decompress_reads_regular_files_only(tmp_path: Path, tiny_codec) -> None:
    from concurrent.futures import ThreadPoolExecutor

    os.mkfifo(tmp_path / "p.aec")
    jobs = [(tmp_path / "p.aec", tmp_path / "p.aec.png")]
    with ThreadPoolExecutor(1) as pool:
        (r,) = batch.decompress_files(jobs, codec=tiny_codec, executor=pool)
    assert r.status == "failed" and "the pipe gave no data" in (r.error or "")


def test_batch_searches_a_rate_target_per_file(tmp_path: Path, tiny_codec) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from aecodec.ratecontrol import compress_to_target

    paths = _inputs(tmp_path / "in", 3)
    jobs = batch.plan(paths, tmp_path / "out")
    with ThreadPoolExecutor(2) as pool:
        results = {
            r.src.name: r
            for r in batch.compress_files(
                jobs, codec=tiny_codec, target_size=400, psnr=True, executor=pool
            )
        }
    for p in paths:
        r = results[p.name]
        want = compress_to_target(tiny_codec, p, target_size=400)
        assert (r.status, r.quality, r.bytes) == ("done", want.quality, want.bytes)
        assert (r.target_met, r.trials) == (want.met, want.trials) and r.bytes is not None
        assert r.psnr is not None and r.bytes <= 400
        assert (tmp_path / "out" / f"{p.stem}.aec").read_bytes() == want.data
    with pytest.raises(ValueError, match="not both"):
        batch.compress_files(jobs, codec=tiny_codec, quality=1, target_bpp=1.0)
    with pytest.raises(ValueError, match="at most one of"):
        batch.compress_files(jobs, codec=tiny_codec, target_bpp=1.0, target_psnr=30.0)


def test_batch_decompress_decodes_files_of_another_bundled_model(tmp_path: Path) -> None:
    """As the CLI does: a file names its model, and any bundled model's file decodes."""
    from concurrent.futures import ThreadPoolExecutor

    other = next(m["name"] for m in aecodec.models() if not m["default"])
    img = smooth_image(48, 32, seed=2)
    (tmp_path / "o.aec").write_bytes(aecodec.Codec(other).compress(img, quality=2))
    jobs = [(tmp_path / "o.aec", tmp_path / "o.png")]
    with ThreadPoolExecutor(1) as pool:
        (r,) = batch.decompress_files(jobs, executor=pool)
    assert r.status == "done", r.error
    assert Image.open(tmp_path / "o.png").size == (48, 32)


def _in_order(results: Iterable[batch.FileResult], written: list[str]) -> list[batch.FileResult]:
    """The results of a batch run in this process, each checked to come before the next job
    wrote anything (``written``: the outputs written so far)."""
    seen: list[batch.FileResult] = []
    for r in results:
        seen.append(r)
        assert len(written) == sum(x.status == "done" for x in seen)  # nothing ran ahead
    return seen


def test_in_process_batch_runs_in_order_and_keeps_every_warning(tmp_path: Path, tiny_codec) -> None:
    """workers=0 (the command line's -j 1): each job in this process, its result yielded before
    the next starts; other libraries' warnings are kept too; a write failure names the output."""
    paths = _inputs(tmp_path / "in", 3)
    corrupt_exif = b"MM\x00*\x00\x00\x00\x08\x00\x05" + b"\x00" * 3  # Pillow warns on it
    Image.fromarray(smooth_image(40, 32)).save(paths[1], exif=corrupt_exif)
    (tmp_path / "in" / "bad.png").write_text("not an image")
    jobs = batch.plan([paths[0], tmp_path / "in" / "bad.png", *paths[1:]], tmp_path / "out")
    written: list[str] = []

    def write(dst: Path, data: bytes) -> None:
        if dst.name == "img2.aec":
            raise OSError(28, "No space left on device")
        batch._write_new(dst, data)
        written.append(dst.name)

    results = _in_order(
        batch.compress_files(jobs, codec=tiny_codec, workers=0, write=write), written
    )
    assert [(r.src.name, r.status) for r in results] == [
        ("img0.png", "done"),
        ("bad.png", "failed"),
        ("img1.png", "done"),
        ("img2.png", "failed"),
    ]
    assert any(w.startswith("UserWarning: Corrupt EXIF data") for w in results[2].warnings)
    assert results[0].warnings == ()
    out = tmp_path / "out" / "img2.aec"
    assert results[3].error == f"{out}: cannot write: No space left on device"
    with pytest.warns(UserWarning, match="Corrupt EXIF data"):  # as the batch's result said
        expected = tiny_codec.compress(paths[1])
    assert (tmp_path / "out" / "img1.aec").read_bytes() == expected


def test_in_process_decompress_in_order_with_a_reference_and_a_read_hook(
    tmp_path: Path, tiny_codec
) -> None:
    """workers=0 (the command line's decompress -j 1): each job in this process, its result
    yielded before the next starts, with the decoded image's size and mode and the PSNR
    against a reference (checked against the file's size before decoding); an input may come
    from a hook (stdin); an output that cannot be made is named in its error."""
    import numpy as np

    from aecodec import files
    from aecodec.metrics import psnr_rgb

    pixels = smooth_image(40, 32, seed=1)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    data = tiny_codec.compress(pixels)
    (tmp_path / "a.aec").write_bytes(data)
    rgba = np.dstack([pixels, np.full((32, 40), 200, np.uint8)])
    (tmp_path / "rgba.aec").write_bytes(tiny_codec.compress(Image.fromarray(rgba, "RGBA")))
    (tmp_path / "junk.aec").write_bytes(b"not an aec file")
    out = tmp_path / "out"
    jobs = [
        (Path("-"), out / "stdin.png"),
        (tmp_path / "rgba.aec", out / "rgba.jpg"),
        (tmp_path / "junk.aec", out / "junk.png"),
        (tmp_path / "a.aec", out / "a.webp"),
    ]
    written: list[str] = []

    def write(dst: Path, data: bytes) -> None:
        batch._write_new(dst, data)
        written.append(dst.name)

    def read(src: Path) -> bytes:
        return data if src == Path("-") else files.read_aec(src)

    results = _in_order(
        batch.decompress_files(
            jobs,
            codec=tiny_codec,
            output_quality=90,
            reference=tmp_path / "a.png",
            read=read,
            workers=0,
            write=write,
        ),
        written,
    )
    assert [(r.src.name, r.status) for r in results] == [
        ("-", "done"),
        ("rgba.aec", "failed"),
        ("junk.aec", "failed"),
        ("a.aec", "done"),
    ]
    decoded = np.asarray(tiny_codec.decompress(data))
    first = results[0]
    assert (first.width, first.height, first.mode, first.bytes) == (40, 32, "RGB", len(data))
    assert first.psnr == pytest.approx(psnr_rgb(pixels, decoded))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "stdin.png")), decoded)
    assert (results[1].error or "").startswith(f"{out / 'rgba.jpg'}: JPEG cannot store the alpha")
    assert results[3].psnr is not None and results[3].mode == "RGB"
    assert sorted(p.name for p in out.iterdir()) == ["a.webp", "stdin.png"]

    Image.fromarray(pixels[:20]).save(tmp_path / "small.png")
    (r,) = batch.decompress_files(
        [(Path("-"), out / "small.png")],
        codec=tiny_codec,
        reference=tmp_path / "small.png",
        read=read,
        workers=0,
    )
    assert (r.status, r.error) == (
        "failed",
        f"{tmp_path / 'small.png'}: the PSNR reference is 40x20 but the decoded image is 40x32",
    )
    assert not (out / "small.png").exists()
