"""STARE retinal vessels: download, verify, cache, decode, FOV masks.

STARE (Hoover, Kouznetsova & Goldbaum, IEEE TMI 19(3):203-210, 2000) has 20 fundus
images with vessel labels by two annotators: ``ah`` (the usual ground truth) and
``vk`` (the second observer). This module turns the three official tar files into
:class:`StareRecord` s:

1. **fetch** -- the official URL (``pooch``: download + SHA-256 + cache), a mirror
   folder holding the same tars and a ``SHA256SUMS``, or an already-extracted folder;
2. **extract once** -- every tar member is checked *before* anything is written
   (no absolute paths, no ``..``, no links or devices), files land in a temporary
   folder inside ``root`` that is renamed into place atomically, so concurrent
   loaders and killed processes never leave a half-filled cache behind;
3. **decode + validate** -- a small strict PNM reader (sizes, maxval, exact byte
   count), images 605x700x3 uint8, labels exactly {0, 255};
4. **FOV** -- STARE ships no field-of-view masks, :func:`compute_fov` derives them.

Splits, tensors and training patches are :mod:`starunet.data`.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from starunet.config import default_data_root, stare_source
from starunet.preflight import PreflightError, check_writable_dir, cli_message


STARE_IDS: tuple[str, ...] = (
    "im0001", "im0002", "im0003", "im0004", "im0005", "im0044", "im0077", "im0081",
    "im0082", "im0139", "im0162", "im0163", "im0235", "im0236", "im0239", "im0240",
    "im0255", "im0291", "im0319", "im0324",
)


IMAGE_SHAPE: tuple[int, int] = (605, 700)  # (height, width) of every STARE image


OFFICIAL_URL = "https://cecas.clemson.edu/~ahoover/stare/probing/"


# SHA-256 of the official tars (as published by other projects that download them).
OFFICIAL_SHA256 = {
    "stare-images.tar": "5f7b509b6067cad4f1be84933145d783de9ec087b3eaaf4db0103dd0144dd433",
    "labels-ah.tar": "ebf2f1e17ca955f24579d9edd990e2dae79a5c82def69f0985d8e24f826ddd2f",
    "labels-vk.tar": "47474a701536b0cfdb369fdce012be36141e9f44d80387f0179446b5cb0f5576",
}


# archive -> the file it holds for each id
ARCHIVE_MEMBERS = {
    "stare-images.tar": "{id}.ppm.gz",
    "labels-ah.tar": "{id}.ah.ppm.gz",
    "labels-vk.tar": "{id}.vk.ppm.gz",
}


_SOURCE_HELP = ("pass source= (or set STARUNET_STARE_SOURCE) to the official URL, a mirror "
                "folder with the three tars + SHA256SUMS, or a folder of extracted im*.ppm.gz files")


class StareDataError(ValueError):
    """STARE files are missing, corrupt or unsafe. The message names the file and the fix."""


@dataclass(frozen=True, eq=False)
class StareRecord:
    """One labelled STARE image. Treat the arrays as read-only (they may be shared)."""

    id: str
    image: np.ndarray     # (605, 700, 3) uint8, RGB
    label: np.ndarray     # (605, 700) bool, annotator ah (ground truth)
    label_vk: np.ndarray  # (605, 700) bool, annotator vk (second observer)
    fov: np.ndarray       # (605, 700) bool, from compute_fov(image)

    def __repr__(self) -> str:
        return (f"StareRecord(id={self.id!r}, image={self.image.shape}, "
                f"vessels={self.label.mean():.1%}, fov={self.fov.mean():.1%})")


def load_stare(source: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
               ids: Iterable[str] | None = None) -> list[StareRecord]:
    """Load the labelled STARE images as records, fetching and caching them on first use.

    Args:
        source: where the data comes from -- the official base URL (default), a mirror
            folder with ``stare-images.tar``, ``labels-ah.tar``, ``labels-vk.tar`` and a
            ``SHA256SUMS`` (each tar is verified against it), or a folder of extracted
            ``imXXXX.ppm.gz``/``.ppm`` files. ``$STARUNET_STARE_SOURCE`` overrides the default.
        root: the cache folder (default :func:`starunet.config.default_data_root`,
            ``$STARUNET_DATA``). Nothing is written outside it.
        ids: which ids to return, in that order (default: all of :data:`STARE_IDS`).

    Raises :class:`StareDataError` (a ``ValueError``) naming the bad file and the fix.
    Takes well under a second once cached (decoding 60 gzipped PNMs + 20 FOV masks).
    """
    wanted = check_ids(ids)
    kind, location = _resolve_source(source)
    root = Path(default_data_root() if root is None else root).expanduser()
    if kind == "extracted":
        files, fix = _find_extracted(Path(location)), f"replace it with a good copy, or {_SOURCE_HELP}"
    else:
        files, fix = _cached_files(kind, location, root), _cache_fix(root)
    return [_decode_record(i, files, fix) for i in wanted]


def check_ids(ids: Iterable[str] | None) -> tuple[str, ...]:
    if ids is None:
        return STARE_IDS
    wanted = (ids,) if isinstance(ids, str) else tuple(ids)
    unknown = [i for i in wanted if i not in STARE_IDS]
    if unknown:
        raise ValueError(f"unknown STARE ids {unknown}; valid ids: {', '.join(STARE_IDS)}")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"duplicate ids in {list(wanted)}")
    return wanted


def _resolve_source(source) -> tuple[str, str | Path]:
    """('url', base_url) | ('mirror', folder) | ('extracted', folder)."""
    if source is None:
        source = stare_source() or OFFICIAL_URL
    text = str(source)
    if text.startswith(("http://", "https://")):
        return "url", text if text.endswith("/") else text + "/"
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise StareDataError(f"STARE source {text} is not a URL or an existing folder; {_SOURCE_HELP}")
    if (folder / "SHA256SUMS").is_file() or any((folder / name).exists() for name in ARCHIVE_MEMBERS):
        return "mirror", folder
    return "extracted", folder


def _cache_fix(root: Path) -> str:
    return (f"delete the cache folder {root / 'stare'} and load again to re-extract the "
            f"verified archives, or {_SOURCE_HELP}")


def _cached_files(kind: str, location, root: Path) -> dict[str, Path]:
    """Fetch + verify + extract each archive once; map file name -> extracted path."""
    files: dict[str, Path] = {}
    for name, pattern in ARCHIVE_MEMBERS.items():
        expected = [pattern.format(id=i) for i in STARE_IDS]
        if kind == "url":
            sha = OFFICIAL_SHA256[name]
            folder = _extract_once(lambda: _download(location, name, root), sha, expected, root, name)
        else:
            sha = _mirror_sha256(location, name)
            folder = _extract_once(lambda: _verified_mirror_tar(location, name, sha), sha, expected, root, name)
        files.update({n: folder / n for n in expected})
    return files


def _download(base_url: str, name: str, root: Path) -> Path:
    # pooch streams into a temporary file beside the target, checks the SHA-256 and
    # only then renames it into place: a failed or partial download never lands in
    # the cache, and a cached file with a wrong hash is fetched again.
    import pooch

    try:
        return Path(pooch.retrieve(base_url + name, known_hash=f"sha256:{OFFICIAL_SHA256[name]}",
                                   fname=name, path=root / "downloads", progressbar=True))
    except ValueError as err:  # pooch's hash mismatch
        raise StareDataError(f"{base_url + name} does not match its official SHA-256 ({err}); the "
                             f"download was discarded -- try again later, or {_SOURCE_HELP}") from err
    except Exception as err:  # network errors come from requests
        raise StareDataError(f"could not download {base_url + name}: {err}; check the network, "
                             f"or {_SOURCE_HELP}") from err


def _mirror_sha256(mirror: Path, name: str) -> str:
    sums_file = mirror / "SHA256SUMS"
    if not sums_file.is_file():
        raise StareDataError(f"the mirror {mirror} has no SHA256SUMS; add one "
                             f"(`sha256sum *.tar > SHA256SUMS`) or {_SOURCE_HELP}")
    sums = {}
    for line in sums_file.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    if name not in sums:
        raise StareDataError(f"{sums_file} lists no checksum for {name}; add it or {_SOURCE_HELP}")
    return sums[name]


def _verified_mirror_tar(mirror: Path, name: str, sha: str) -> Path:
    path = mirror / name
    if not path.is_file():
        raise StareDataError(f"{name} is missing from the mirror {mirror}; copy it there or {_SOURCE_HELP}")
    actual = _sha256(path)
    if actual != sha:
        raise StareDataError(f"{path} has SHA-256 {actual} but SHA256SUMS says {sha}: the copy is "
                             f"corrupt or incomplete; copy it again, or {_SOURCE_HELP}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract_once(get_archive, sha: str, expected: list[str], root: Path, name: str) -> Path:
    """Extract a verified archive into ``root/stare/<name>-<sha>`` unless already there.

    The folder name carries the archive's hash, so a different archive never reuses
    a stale extraction; the rename makes the folder appear complete or not at all.
    """
    dest = root / "stare" / f"{name.removesuffix('.tar')}-{sha[:16]}"
    if dest.is_dir():
        return dest
    archive = get_archive()  # downloads / verifies only when there is work to do
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _safe_extract(archive, tmp)
        missing = [n for n in expected if not (tmp / n).is_file()]
        if missing:
            raise StareDataError(f"{archive} lacks {len(missing)} of its {len(expected)} files "
                                 f"(e.g. {missing[0]}): the archive is incomplete; re-download it, or {_SOURCE_HELP}")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # not "another process was faster"
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _unsafe_reason(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or name.startswith("\\"):
        return "has an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "has a '..' component"
    if member.issym() or member.islnk():
        return f"is a link (to {member.linkname!r})"
    if member.isdev():
        return "is a device or FIFO"
    if not (member.isfile() or member.isdir()):
        return "is not a regular file"
    return None


def _safe_extract(archive: Path, dest: Path) -> None:
    """Check every member first, then write only regular files, flattened into ``dest``."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            seen: set[str] = set()
            for member in members:
                reason = _unsafe_reason(member)
                if member.isfile():
                    base = PurePosixPath(member.name).name
                    reason = reason or (f"repeats the file name {base!r}" if base in seen else None)
                    seen.add(base)
                if reason:
                    raise StareDataError(
                        f"unsafe archive {archive}: member {member.name!r} {reason}; nothing was "
                        f"extracted. The archive is corrupt or tampered with: delete it and "
                        f"re-download, or {_SOURCE_HELP}")
            for member in members:
                if member.isfile():
                    # basename only: even a name that slipped through cannot leave dest
                    target = dest / PurePosixPath(member.name).name
                    with tar.extractfile(member) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise StareDataError(f"cannot read the archive {archive} ({err}): it is truncated or "
                             f"corrupt; delete it and re-download, or {_SOURCE_HELP}") from err


def _find_extracted(folder: Path) -> dict[str, Path]:
    """Map the expected file names to paths in an extracted folder (``.ppm.gz`` or ``.ppm``)."""
    found = {p.name: p for p in folder.rglob("im*.ppm*") if p.is_file()}
    files, missing = {}, []
    for pattern in ARCHIVE_MEMBERS.values():
        for i in STARE_IDS:
            name = pattern.format(id=i)
            path = found.get(name) or found.get(name.removesuffix(".gz"))
            if path is None:
                missing.append(name)
            else:
                files[name] = path
    if missing:
        raise StareDataError(f"the folder {folder} lacks {len(missing)} STARE files (e.g. {missing[0]} "
                             f"or {missing[0].removesuffix('.gz')}); all 20 images and both label sets "
                             f"are needed -- {_SOURCE_HELP}")
    return files


def read_pnm(path: str | os.PathLike) -> np.ndarray:
    """Read a binary PGM/PPM (``P5``/``P6``, maxval 255, optionally gzipped) strictly.

    STARE's labels are 8-bit P5 files named ``.ppm`` with ``#`` header comments. The
    reader checks the header and that exactly ``width*height*channels`` bytes follow,
    so a truncated file raises instead of yielding a partly black image.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise StareDataError(f"{path} is truncated or corrupt ({err})") from err
    return _parse_pnm(raw, path)


def _parse_pnm(raw: bytes, path: Path) -> np.ndarray:
    tokens, pos = [], 0
    while len(tokens) < 4:
        while pos < len(raw) and raw[pos:pos + 1].isspace():
            pos += 1
        if raw[pos:pos + 1] == b"#":  # comment up to the end of the line
            pos = raw.find(b"\n", pos)
            if pos < 0:
                break
            continue
        start = pos
        while pos < len(raw) and not raw[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            break
        tokens.append(raw[start:pos])
    if len(tokens) < 4 or tokens[0] not in (b"P5", b"P6") or not all(t.isdigit() for t in tokens[1:]):
        raise StareDataError(f"{path} is not a binary PGM/PPM file (header {b' '.join(tokens)[:40]!r})")
    width, height, maxval = (int(t) for t in tokens[1:])
    if maxval != 255:
        raise StareDataError(f"{path} has maxval {maxval}; only 8-bit (255) files are supported")
    channels = 3 if tokens[0] == b"P6" else 1
    data = raw[pos + 1:]  # exactly one whitespace byte separates header and pixels
    if len(data) != width * height * channels:
        raise StareDataError(f"{path} holds {len(data)} pixel bytes, expected "
                             f"{width}x{height}x{channels} = {width * height * channels}: truncated or corrupt")
    # copy: frombuffer views are read-only, and records should hold ordinary arrays
    array = np.frombuffer(data, dtype=np.uint8).reshape(height, width, channels).copy()
    return array if channels == 3 else array[..., 0]


def _decode_record(stare_id: str, files: dict[str, Path], fix: str) -> StareRecord:
    def read(name: str) -> np.ndarray:
        try:
            return read_pnm(files[name])
        except StareDataError as err:
            raise StareDataError(f"{err}; {fix}") from err

    image = read(f"{stare_id}.ppm.gz")
    if image.shape != (*IMAGE_SHAPE, 3):
        raise StareDataError(f"{files[f'{stare_id}.ppm.gz']} has shape {image.shape}, "
                             f"expected {(*IMAGE_SHAPE, 3)}; {fix}")
    labels = []
    for who in ("ah", "vk"):
        name = f"{stare_id}.{who}.ppm.gz"
        label = read(name)
        if label.ndim == 3:  # a label saved as RGB: accept only if it is grey
            if not (label == label[..., :1]).all():
                raise StareDataError(f"{files[name]} is a colour image, expected a binary label; {fix}")
            label = label[..., 0]
        if label.shape != IMAGE_SHAPE:
            raise StareDataError(f"{files[name]} has shape {label.shape}, expected {IMAGE_SHAPE}; {fix}")
        if np.setdiff1d(np.unique(label), (0, 255)).size:
            raise StareDataError(f"{files[name]} has values other than 0 and 255, so it is not a "
                                 f"binary vessel label; {fix}")
        labels.append(label > 0)
    return StareRecord(id=stare_id, image=image, label=labels[0], label_vk=labels[1],
                       fov=compute_fov(image))


FOV_RED_THRESHOLD = 45  # on the 5x5-smoothed red channel, 0..255


def compute_fov(image: np.ndarray) -> np.ndarray:
    """The field of view (the bright disc of the retina) of a fundus image, ``(H, W) bool``.

    STARE ships no FOV masks. The camera leaves everything outside the disc nearly
    black, and the red channel separates the two best: the retina reflects red
    strongly even at its dark rim and around vessels, while green/blue are weak there.
    On STARE the smoothed red value outside the disc stays below ~40 (sensor noise)
    and inside it stays above ~50 at the 1st percentile, so a fixed threshold of 45
    sits in the gap (IoU with third-party reference masks varies by < 0.001 for
    thresholds 40-50). Morphology then cleans the threshold: an opening removes
    speckle, the largest connected component is the disc, a closing and hole
    filling restore dark vessels/lesions inside it. ~25 ms per image.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"compute_fov expects an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    red = ndimage.uniform_filter(image[..., 0].astype(np.float32), size=5)
    mask = red > FOV_RED_THRESHOLD
    cross = ndimage.generate_binary_structure(2, 1)
    mask = ndimage.binary_opening(mask, structure=cross, iterations=2)
    components, count = ndimage.label(mask)
    if count == 0:
        return mask  # an all-dark image has no field of view
    sizes = ndimage.sum_labels(mask, components, index=np.arange(1, count + 1))
    mask = components == 1 + int(np.argmax(sizes))
    mask = ndimage.binary_closing(mask, structure=cross, iterations=2)
    return _fill_holes(mask)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes`` via one labelling of the background (~10x faster):
    background components that do not touch the border are holes."""
    background, _ = ndimage.label(~mask)
    outside = np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))
    return ~np.isin(background, outside[outside > 0]) & (background > 0) | mask


def cli(argv: list[str]) -> int:
    """``python -m starunet fetch [--source S] [--root R]``: fetch, verify, summarise."""
    parser = argparse.ArgumentParser(prog="python -m starunet fetch",
                                     description="Download (or copy from a mirror), verify and cache STARE.")
    parser.add_argument("--source", default=None,
                        help="official URL (default), mirror folder with tars + SHA256SUMS, or extracted "
                             "folder; default $STARUNET_STARE_SOURCE or the official URL")
    parser.add_argument("--root", default=None, help="cache folder (default $STARUNET_DATA or a per-user cache)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:  # what was passed: exit code 2, before anything is downloaded
        if _resolve_source(args.source)[0] != "extracted":  # an extracted folder is read in place
            check_writable_dir(args.root or default_data_root(), "data cache folder", "--root (or STARUNET_DATA)")
    except (StareDataError, PreflightError) as err:
        print(f"error: {cli_message(err)}", file=sys.stderr)
        return 2
    try:  # the data itself (a failed download, a checksum or decoding error): exit code 1
        records = load_stare(source=args.source, root=args.root)
    except StareDataError as err:
        print(f"error: {cli_message(err)}", file=sys.stderr)
        return 1
    for row in dataset_summary(records):
        print(f"{row['id']}  ok  605x700 RGB  vessels (ah) {row['vessel_fraction_image']:5.1%} of image, "
              f"{row['vessel_fraction_fov']:5.1%} of FOV  FOV {row['fov_fraction']:5.1%} of image")
    root = Path(args.root or default_data_root())
    print(f"{len(records)} records verified and cached in {root} ({time.perf_counter() - start:.1f} s)")
    return 0


def dataset_summary(records: Sequence[StareRecord]) -> list[dict]:
    """Per record: vessel fraction (ah) over the whole image and inside the FOV, FOV fraction."""
    return [{"id": r.id,
             "vessel_fraction_image": float(r.label.mean()),
             "vessel_fraction_fov": float(r.label[r.fov].mean()),
             "fov_fraction": float(r.fov.mean())} for r in records]
