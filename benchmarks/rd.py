"""Rate-distortion sweep on Kodak: every (image, codec, quality), resumable.

Usage::

    python -m benchmarks.rd                                  # all 24 Kodak images, all codecs
    python -m benchmarks.rd --codecs aecodec,jpeg --limit 4 --workers 2
    python -m benchmarks.rd --overlay-anchors                # add published curves to plot/table

Each (image, codec, quality) is encoded to a complete file, decoded, and measured (bpp from the
file's full byte count, PSNR-RGB, MS-SSIM, encode and decode wall time). Results are appended
to ``<out>/cache.jsonl`` as they finish, keyed by image digest, codec, codec version (library
versions and settings; for aecodec the model's weights sha256) and quality, so an interrupted
run resumes where it stopped and a changed codec is re-measured.

Outputs in ``--out`` (default ``rd-results/`` in the current directory; the committed results
in ``benchmarks/results`` are written only with an explicit ``--out benchmarks/results``):

- ``<codec>.json``   mean over images per quality, CompressAI's results layout
- ``per_image.csv``  one row per (image, codec, quality)
- ``rd.md``          BD-rate table vs JPEG 4:2:0 and vs aecodec, with the overlap ranges
- ``rd.png``         PSNR-RGB and MS-SSIM vs bpp
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import click
import numpy as np

from aecodec.files import sha256_file
from benchmarks import bdrate, metrics
from benchmarks.codecs import DEFAULT_CODECS, BenchCodec, CodecUnavailable, codec_names, make_codec
from benchmarks.plot import Curve, load_curve, plot_rd

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where a run writes unless told: a folder of the current directory, never the committed
#: ``benchmarks/results`` (which changes only with an explicit ``--out benchmarks/results``).
DEFAULT_OUT = Path("rd-results")
#: CompressAI's published Kodak results, kept in the repository (benchmarks/anchors/README.md).
DEFAULT_ANCHORS = REPO_ROOT / "benchmarks" / "anchors" / "kodak"
#: Published curves drawn with ``--overlay-anchors`` (file stems in the anchors directory).
DEFAULT_ANCHOR_FILES = (
    "jpeg",
    "webp",
    "jpeg2000",
    "compressai-bmshj2018-factorized_mse_cuda",
    "compressai-bmshj2018-hyperprior_mse_cuda",
    "bpg_444_x265_ycbcr",
    "vtm",
)
IMAGE_SUFFIXES = (".png", ".ppm", ".bmp", ".tif", ".tiff")
#: Bump when the measurement itself changes (metrics, timing), to invalidate every cached result.
MEASURE_VERSION = "1"
CACHE_NAME = "cache.jsonl"


@dataclass(frozen=True)
class Task:
    """One measurement to make."""

    image: str  # path
    image_name: str
    image_sha: str
    codec: str
    version: str
    quality: int | float
    crop: tuple[int, int] | None = None

    @property
    def key(self) -> str:
        return json.dumps(
            [
                MEASURE_VERSION,
                self.image_name,
                self.image_sha[:16],
                self.codec,
                self.version,
                self.quality,
                list(self.crop) if self.crop else None,
            ],
            separators=(",", ":"),
        )


# ---------------------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {"options": {}, "codecs": {}}


def _init_worker(options: dict[str, Any], threads: int, set_env: bool = True) -> None:
    """Process initializer: pin math libraries to ``threads`` threads, remember codec options.

    ``set_env`` is False when running in the caller's own process (``--workers 0``), whose
    environment is left alone.
    """
    if set_env and threads > 0:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the project
        pass
    else:
        if threads > 0:
            torch.set_num_threads(threads)
    _WORKER["options"] = dict(options)
    _WORKER["codecs"] = {}
    _load_rgb.cache_clear()


def _worker_codec(name: str) -> BenchCodec:
    codec = _WORKER["codecs"].get(name)
    if codec is None:
        codec = make_codec(name, **_WORKER["options"])
        codec.warmup()
        _WORKER["codecs"][name] = codec
    return codec


@lru_cache(maxsize=4)
def _load_rgb(path: str, crop: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.array(im.convert("RGB"))  # writable copy
    if crop is not None:
        cw, ch = crop
        h, w = rgb.shape[:2]
        cw, ch = min(cw, w), min(ch, h)
        top, left = (h - ch) // 2, (w - cw) // 2
        rgb = np.ascontiguousarray(rgb[top : top + ch, left : left + cw])
    rgb.setflags(write=False)  # shared between tasks; codecs must not modify their input
    return rgb


def run_task(task: Task) -> dict[str, Any]:
    """Encode, decode and measure one (image, codec, quality); never raises.

    Returns:
        A cache record, or ``{"key", "error"}`` if the codec failed.
    """
    try:
        codec = _worker_codec(task.codec)
        rgb = _load_rgb(task.image, task.crop)
        h, w = rgb.shape[:2]
        t0 = time.perf_counter()
        data = codec.encode(rgb.copy(), task.quality)
        t1 = time.perf_counter()
        out = codec.decode(data)
        t2 = time.perf_counter()
        out = np.asarray(out)
        if out.shape != rgb.shape or out.dtype != np.uint8:
            raise ValueError(f"decoded {out.dtype} {out.shape}, expected uint8 {rgb.shape}")
        return {
            "key": task.key,
            "image": task.image_name,
            "codec": task.codec,
            "version": task.version,
            "quality": task.quality,
            "width": w,
            "height": h,
            "bytes": len(data),
            "bpp": metrics.bpp(len(data), w, h),
            "psnr-rgb": _json_float(metrics.psnr_rgb(rgb, out)),
            "ms-ssim-rgb": _json_float(metrics.ms_ssim(rgb, out)),
            "encoding_time": t1 - t0,
            "decoding_time": t2 - t1,
        }
    except Exception as exc:
        return {
            "key": task.key,
            "error": f"{task.codec} q={task.quality} on {task.image_name}: "
            f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=5),
        }


def _json_float(x: float) -> float | None:
    """``None`` for inf/nan so the JSON stays standard (inf PSNR = lossless)."""
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------------------- parent side


def read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """Load ``cache.jsonl``; a torn last line (interrupted write) is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "key" in rec and "error" not in rec:
                records[rec["key"]] = rec
    return records


def _iter_results(
    tasks: Sequence[Task], workers: int, threads: int, options: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    if workers <= 0:  # in-process (debugging, tiny runs)
        _init_worker(options, threads, set_env=False)
        for task in tasks:
            yield run_task(task)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork after torch/BLAS threads exist
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(options, threads)
    ) as pool:
        # Keep a bounded number of tasks in flight so an interrupt loses little and order holds.
        pending: set[Future[dict[str, Any]]] = set()
        it = iter(tasks)
        try:
            for task in it:
                pending.add(pool.submit(run_task, task))
                if len(pending) >= 4 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        yield fut.result()
            for fut in as_completed(pending):
                yield fut.result()
        except BaseException:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def run_tasks(
    tasks: Sequence[Task],
    cache_path: Path,
    *,
    workers: int = 1,
    threads: int = 1,
    options: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[str]:
    """Run ``tasks``, appending each result to ``cache_path`` as soon as it arrives.

    Returns:
        Error messages of failed tasks (those are not cached and will be retried next run).
    """
    from tqdm import tqdm

    errors: list[str] = []
    if not tasks:
        return errors
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    if cache_path.is_file() and cache_path.stat().st_size:
        with cache_path.open("rb+") as f:  # an interrupted write may have left a torn line
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
    with (
        cache_path.open("a", encoding="utf-8") as cache,
        tqdm(total=len(tasks), desc="RD", unit="pt", disable=not progress) as bar,
    ):
        for rec in _iter_results(tasks, workers, threads, options or {}):
            bar.update(1)
            if "error" in rec:
                errors.append(rec["error"])
                bar.write(f"warning: {rec['error']}")
                continue
            cache.write(json.dumps(rec, separators=(",", ":")) + "\n")
            cache.flush()
    return errors


def aggregate(
    codec: BenchCodec, images: Sequence[str], records: dict[tuple[str, Any], dict[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """Mean over images per quality, for qualities measured on every image.

    Args:
        codec: The codec (for name, description and sweep).
        images: Image names that must all be present.
        records: ``(image_name, quality) -> record`` for this codec.

    Returns:
        ``(results_json, notes)``; results in CompressAI's layout sorted by bpp.
    """
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    for q in codec.qualities:
        recs = [records.get((img, q)) for img in images]
        if any(r is None for r in recs):
            missing = sum(r is None for r in recs)
            notes.append(f"{codec.name} quality {q}: {missing} image(s) missing, point left out")
            continue

        def mean(field: str, recs: list[Any] = recs) -> float | None:
            vals = [r[field] for r in recs]
            if any(v is None for v in vals):  # lossless (inf PSNR) or undefined MS-SSIM
                return None
            return float(np.mean(vals))

        rows.append(
            {
                "quality": q,
                "bpp": mean("bpp"),
                "psnr-rgb": mean("psnr-rgb"),
                "ms-ssim-rgb": mean("ms-ssim-rgb"),
                "encoding_time": mean("encoding_time"),
                "decoding_time": mean("decoding_time"),
            }
        )
    rows.sort(key=lambda r: r["bpp"])
    results = {k: [r[k] for r in rows] for k in ("bpp", "psnr-rgb", "ms-ssim-rgb")}
    results["ms-ssim"] = results["ms-ssim-rgb"]  # alias: CompressAI's model-eval key
    results["encoding_time"] = [r["encoding_time"] for r in rows]
    results["decoding_time"] = [r["decoding_time"] for r in rows]
    results["quality"] = [r["quality"] for r in rows]
    return {
        "name": codec.label,
        "description": f"{codec.description}; mean over {len(images)} image(s)",
        "results": results,
    }, notes


def _bd_cell(kind: str, ref: Curve | None, test: Curve, metric: str = "psnr") -> tuple[str, str]:
    """Format one BD value and its overlap interval for the markdown table."""
    if ref is None:
        return "-", "-"
    if ref is test:
        return "0 % (ref)" if kind == "rate" else "0 dB (ref)", "-"

    def xy(c: Curve) -> tuple[list[float], list[float]]:
        x, y = c.points("psnr" if metric == "psnr" else "msssim")
        if metric == "msssim-db":
            pairs = [(r, metrics.ms_ssim_db(v)) for r, v in zip(x, y, strict=True)]
            pairs = [p for p in pairs if math.isfinite(p[1])]
            return [p[0] for p in pairs], [p[1] for p in pairs]
        return x, y

    try:
        if kind == "rate":
            res = bdrate.bd_rate(*xy(ref), *xy(test))
            return f"{res.value:+.1f} %", f"{res.low:.2f}-{res.high:.2f} dB"
        res = bdrate.bd_psnr(*xy(ref), *xy(test))
        return f"{res.value:+.2f} dB", f"{res.low:.3f}-{res.high:.3f} bpp"
    except ValueError as exc:
        return "n/a", ("no overlap" if "overlap" in str(exc) else "< 4 points")


def bd_table(curves: Sequence[Curve], jpeg: Curve | None, aec: Curve | None) -> str:
    """Markdown table of BD-rate (PSNR and MS-SSIM dB) vs JPEG and BD-rate vs aecodec."""
    lines = [
        "| codec | points | bpp range | BD-rate vs JPEG (PSNR) | PSNR overlap "
        "| BD-PSNR vs JPEG | BD-rate vs JPEG (MS-SSIM dB) | BD-rate vs aecodec (PSNR) "
        "| PSNR overlap |",
        "|---|---:|---|---:|---|---:|---:|---:|---|",
    ]
    for c in curves:
        x, _ = c.points("psnr")
        rng = f"{min(x):.3f}-{max(x):.3f}" if x else "-"
        r_j, o_j = _bd_cell("rate", jpeg, c)
        p_j, _ = _bd_cell("psnr", jpeg, c)
        m_j, _ = _bd_cell("rate", jpeg, c, "msssim-db")
        r_a, o_a = _bd_cell("rate", aec, c)
        label = f"{c.label} (published)" if c.published else c.label
        lines.append(
            f"| {label} | {len(x)} | {rng} | {r_j} | {o_j} | {p_j} | {m_j} | {r_a} | {o_a} |"
        )
    return "\n".join(lines)


def list_images(directory: Path) -> list[Path]:
    """Image files directly in ``directory``, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _parse_crop(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        w, _, h = value.lower().partition("x")
        crop = (int(w), int(h or w))
    except ValueError:
        raise click.BadParameter(f"expected WxH, got {value!r}", param_hint="--crop") from None
    if min(crop) < 16:
        raise click.BadParameter("crop must be at least 16x16", param_hint="--crop")
    return crop


def _write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    fields = [
        "image",
        "codec",
        "quality",
        "width",
        "height",
        "bytes",
        "bpp",
        "psnr-rgb",
        "ms-ssim-rgb",
        "encoding_time",
        "decoding_time",
    ]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory of images (default: kodak/images, fetched and verified via kodak.fetch).",
)
@click.option(
    "--codecs",
    default=",".join(DEFAULT_CODECS),
    show_default=True,
    help=f"Comma-separated; known: {', '.join(codec_names())}.",
)
@click.option(
    "--workers",
    type=int,
    default=max(1, (os.cpu_count() or 2) // 2),
    show_default=True,
    help="Worker processes (0 = run in this process).",
)
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="Torch/BLAS threads per worker (0 = library default).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
)
@click.option(
    "--anchors",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_ANCHORS,
    show_default=True,
    help="Directory of published results (CompressAI JSON layout).",
)
@click.option("--overlay-anchors", is_flag=True, help="Draw published curves (dashed), tabulate.")
@click.option(
    "--anchor-files",
    default=",".join(DEFAULT_ANCHOR_FILES),
    show_default=True,
    help="Stems of the anchor JSON files used by --overlay-anchors.",
)
@click.option("--limit", type=int, help="Only the first N images.")
@click.option("--crop", help="Center-crop every image to WxH first (quick runs; not comparable).")
@click.option("--model", help="aecodec model name (default: the default model).")
@click.option(
    "--compressai-checkpoint",
    "compressai_checkpoints",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="bmshj2018-factorized checkpoint, one per quality, lowest rate first (repeatable); "
    "adds codec compressai-factorized.",
)
@click.option("--no-plot", is_flag=True, help="Skip rd.png.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(
    images: Path | None,
    codecs: str,
    workers: int,
    threads: int,
    out: Path,
    anchors: Path,
    overlay_anchors: bool,
    anchor_files: str,
    limit: int | None,
    crop: str | None,
    model: str | None,
    compressai_checkpoints: tuple[str, ...],
    no_plot: bool,
    quiet: bool,
) -> None:
    """Measure rate-distortion of aecodec and standard codecs on Kodak (resumable)."""
    if overlay_anchors and not anchors.is_dir():  # before any measuring
        raise click.UsageError(
            f"--overlay-anchors: no anchor folder {anchors}; pass --anchors DIR (published "
            "curves in CompressAI's JSON layout) or leave out --overlay-anchors"
        )
    crop_wh = _parse_crop(crop)
    images, paths = _find_images(images, limit)
    options = {"model": model, "compressai_checkpoints": list(compressai_checkpoints)}
    active, skipped = _make_codecs(codecs, options)
    out.mkdir(parents=True, exist_ok=True)
    tasks, errors = _run_points(paths, active, crop_wh, out, workers, threads, options, quiet)
    curves, notes = _write_curves(out, active, [p.name for p in paths], tasks)
    published = (
        _published_curves(anchors, anchor_files, len(paths), notes) if overlay_anchors else []
    )
    all_curves = list(curves.values()) + published
    table = bd_table(all_curves, curves.get("jpeg"), curves.get("aecodec"))
    summary = _summary(images, len(paths), crop_wh)
    _write_report(out / "rd.md", summary, table, active, skipped, notes + errors)
    if not no_plot:
        plot_rd(all_curves, out / "rd.png", title=f"Kodak ({len(paths)} images)", max_bpp=3.0)
    click.echo(table)
    click.echo(
        f"wrote {out}/rd.md, per_image.csv, {len(curves)} JSON file(s)"
        + ("" if no_plot else ", rd.png")
    )
    if errors:
        raise click.ClickException(f"{len(errors)} point(s) failed; see {out / 'rd.md'}")


def _find_images(images: Path | None, limit: int | None) -> tuple[Path, list[Path]]:
    """The image folder (Kodak, fetched and verified, by default) and its first ``limit``
    images."""
    if images is None:
        from kodak.fetch import KodakError, ensure_kodak

        try:
            images = ensure_kodak(log=click.echo)
        except KodakError as exc:
            raise click.ClickException(str(exc)) from exc
    paths = list_images(images)
    if limit is not None:
        paths = paths[: max(0, limit)]
    if not paths:
        raise click.ClickException(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images}")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise click.ClickException("image names must be unique")
    return images, paths


def _make_codecs(codecs: str, options: dict[str, Any]) -> tuple[list[BenchCodec], list[str]]:
    """The codecs asked for that are available, and a line for each one skipped."""
    wanted = [c.strip() for c in codecs.split(",") if c.strip()]
    if options["compressai_checkpoints"] and "compressai-factorized" not in wanted:
        wanted.append("compressai-factorized")
    unknown = [c for c in wanted if c not in codec_names()]
    if unknown:
        raise click.ClickException(
            f"unknown codec(s) {', '.join(unknown)}; known: {', '.join(codec_names())}"
        )
    active: list[BenchCodec] = []
    skipped: list[str] = []
    for name in dict.fromkeys(wanted):
        try:
            active.append(make_codec(name, **options))
        except CodecUnavailable as exc:
            skipped.append(f"{name}: {exc}")
            click.echo(f"skipping {name}: {exc}", err=True)
    if not active:
        raise click.ClickException("no codec available to run")
    return active, skipped


def _run_points(
    paths: list[Path],
    active: list[BenchCodec],
    crop_wh: tuple[int, int] | None,
    out: Path,
    workers: int,
    threads: int,
    options: dict[str, Any],
    quiet: bool,
) -> tuple[list[Task], list[str]]:
    """Run every (image, codec, quality) point not in the cache; returns all points and the
    failures."""
    cache_path = out / CACHE_NAME
    cache = read_cache(cache_path)
    shas = {p.name: sha256_file(p) for p in paths}
    tasks = [
        Task(str(p), p.name, shas[p.name], c.name, c.version, q, crop_wh)
        for p in paths
        for c in active
        for q in c.qualities
    ]
    todo = [t for t in tasks if t.key not in cache]
    click.echo(
        f"{len(paths)} image(s) x {len(active)} codec(s): {len(tasks)} points, "
        f"{len(tasks) - len(todo)} cached, {len(todo)} to run with {workers} worker(s)"
    )
    try:
        errors = run_tasks(
            todo, cache_path, workers=workers, threads=threads, options=options, progress=not quiet
        )
    except KeyboardInterrupt:
        raise click.ClickException(
            f"interrupted; finished points are saved in {cache_path}, rerun to resume"
        ) from None
    except BrokenProcessPool as exc:
        raise click.ClickException(
            f"a worker process died ({exc}); out of memory? Finished points are saved in "
            f"{cache_path}; rerun (perhaps with fewer --workers) to resume"
        ) from None
    return tasks, errors


def _write_curves(
    out: Path, active: list[BenchCodec], names: list[str], tasks: list[Task]
) -> tuple[dict[str, Curve], list[str]]:
    """per_image.csv and one JSON curve per codec; returns the curves and notes on them."""
    cache = read_cache(out / CACHE_NAME)
    per_image = [cache[t.key] for t in tasks if t.key in cache]
    _write_csv(out / "per_image.csv", per_image)
    notes: list[str] = []
    curves: dict[str, Curve] = {}
    for c in active:
        recs = {(r["image"], r["quality"]): r for r in per_image if r["codec"] == c.name}
        result, codec_notes = aggregate(c, names, recs)
        notes += codec_notes
        path = out / f"{c.name}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        curves[c.name] = load_curve(path)
    return curves, notes


def _published_curves(
    anchors: Path, anchor_files: str, num_images: int, notes: list[str]
) -> list[Curve]:
    """The published anchor curves found (a note for each one missing, added to ``notes``)."""
    published: list[Curve] = []
    for stem in (s.strip() for s in anchor_files.split(",") if s.strip()):
        p = anchors / f"{stem}.json"
        if p.is_file():
            published.append(load_curve(p, published=True))
        else:
            click.echo(f"warning: anchor {p} not found; its curve is left out", err=True)
            notes.append(f"anchor {p} not found")
    if published and num_images != 24:
        notes.append(
            f"published curves are means over all 24 Kodak images; this run used {num_images}"
        )
    return published


def _display_path(path: Path) -> str:
    """``path`` relative to the checkout when inside it, else its last two parts (reports
    name no absolute paths)."""
    p = path.resolve()
    root = Path(__file__).resolve().parent.parent
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(Path(*p.parts[-2:]))


def _summary(images: Path, num_images: int, crop_wh: tuple[int, int] | None) -> str:
    return (
        f"{num_images} image(s) from `{_display_path(images)}`"
        + (f", center-cropped to {crop_wh[0]}x{crop_wh[1]}" if crop_wh else "")
        + "; mean over images per quality; bpp from whole-file bytes; PSNR on RGB (8 bit); "
        "BD-rate: cubic Bjontegaard (negative = fewer bits than the reference at equal "
        "quality), integrated over the overlap shown."
    )


def _write_report(
    path: Path,
    summary: str,
    table: str,
    active: list[BenchCodec],
    skipped: list[str],
    notes: list[str],
) -> None:
    """rd.md: the summary, the BD table, the codecs, those skipped, and the notes."""
    lines = ["# Rate-distortion results", "", summary, "", table, ""]
    lines += ["## Codecs", ""] + [f"- `{c.name}`: {c.description}" for c in active] + [""]
    if skipped:
        lines += ["## Skipped", ""] + [f"- {s}" for s in skipped] + [""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
