"""Tests of starunet.stare and starunet.data: loading and verifying STARE
(bad-archive cases included), strict decoding, FOV, splits, patches, and the
real STARE data through the ``stare_records`` fixture."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from starunet import data, stare
from starunet.data import PatchDataset, Split, image_to_tensor, patch_vessel_fraction, split_ids, vessel_fraction
from starunet.stare import (ARCHIVE_MEMBERS, IMAGE_SHAPE, STARE_IDS, StareDataError, StareRecord, compute_fov,
                            load_stare, read_pnm)

H, W = IMAGE_SHAPE


# ------------------------------------------------------------------ synthetic STARE

def pnm_bytes(array: np.ndarray, comment: bool = False) -> bytes:
    magic = b"P6" if array.ndim == 3 else b"P5"
    header = magic + b"\n" + (b"# CREATOR: test\n" if comment else b"") + f"{array.shape[1]} {array.shape[0]}\n255\n".encode()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


@functools.lru_cache(maxsize=None)
def fake_files() -> dict[str, bytes]:
    """Gzipped fake PPMs for every member of the three tars: a bright disc and a few 'vessels'."""
    rows, cols = np.mgrid[:H, :W]
    disc = (rows - H / 2) ** 2 + (cols - W / 2) ** 2 < 280 ** 2
    files = {}
    for k, stare_id in enumerate(STARE_IDS):
        image = np.zeros((H, W, 3), np.uint8)
        image[disc] = (150 + k, 80, 30)
        vessels = disc & (np.abs(rows - 100 - 20 * k) < 3)
        image[vessels] = (90, 30, 10)
        files[f"{stare_id}.ppm.gz"] = gzip.compress(pnm_bytes(image), compresslevel=1)
        for who, extra in (("ah", 0), ("vk", 1)):
            label = np.where(vessels | (disc & (np.abs(cols - 300) < 2 + extra)), 255, 0).astype(np.uint8)
            files[f"{stare_id}.{who}.ppm.gz"] = gzip.compress(pnm_bytes(label, comment=True), compresslevel=1)
    return files


def write_tar(path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> None:
    with tarfile.open(path, "w") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)


def make_mirror(folder: Path, replace: dict[str, bytes] | None = None, drop: tuple[str, ...] = (),
                extra: dict[str, list[tarfile.TarInfo]] | None = None) -> Path:
    """A mirror folder (three tars + SHA256SUMS) built from ``fake_files``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {**fake_files(), **(replace or {})}
    sums = []
    for archive, pattern in ARCHIVE_MEMBERS.items():
        names = [pattern.format(id=i) for i in STARE_IDS]
        write_tar(folder / archive, {n: files[n] for n in names if n not in drop}, (extra or {}).get(archive, []))
        sums.append(f"{hashlib.sha256((folder / archive).read_bytes()).hexdigest()}  {archive}")
    (folder / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return folder


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return make_mirror(tmp_path_factory.mktemp("mirror"))


def extraction_dirs(root: Path) -> list[Path]:
    return sorted((root / "stare").iterdir()) if (root / "stare").is_dir() else []


# ------------------------------------------------------------------ loading

def test_mirror_loads_all_records_with_contract_types(mirror, tmp_path):
    records = load_stare(source=mirror, root=tmp_path)
    assert [r.id for r in records] == list(STARE_IDS)
    r = records[3]
    assert r.image.shape == (H, W, 3) and r.image.dtype == np.uint8
    for mask in (r.label, r.label_vk, r.fov):
        assert mask.shape == (H, W) and mask.dtype == bool
    assert tuple(r.image[H // 2, W // 2]) == (153, 80, 30)
    assert not np.array_equal(r.label, r.label_vk)  # the two annotators are kept apart


def test_cache_is_reused_without_the_source(tmp_path):
    source = make_mirror(tmp_path / "mirror")
    root = tmp_path / "cache"
    load_stare(source=source, root=root, ids=["im0001"])
    for tar in source.glob("*.tar"):
        tar.write_bytes(b"gone")  # a second load must not even read the archives
    records = load_stare(source=source, root=root, ids=["im0002", "im0001"])
    assert [r.id for r in records] == ["im0002", "im0001"]
    assert not any(p.name.startswith(".") for p in extraction_dirs(root))  # no temp folders left


def test_concurrent_loads_share_one_cache(mirror, tmp_path):
    results, errors = [], []

    def load():
        try:
            results.append(load_stare(source=mirror, root=tmp_path, ids=["im0005"]))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3
    assert len(extraction_dirs(tmp_path)) == 3  # one folder per archive, no leftovers


def test_extracted_folder_source(tmp_path):
    folder = tmp_path / "extracted" / "nested"
    folder.mkdir(parents=True)
    for name, payload in fake_files().items():
        if name.endswith(".ah.ppm.gz"):  # mix plain and gzipped files
            (folder / name.removesuffix(".gz")).write_bytes(gzip.decompress(payload))
        else:
            (folder / name).write_bytes(payload)
    records = load_stare(source=tmp_path / "extracted", root=tmp_path / "cache", ids=["im0324"])
    assert records[0].id == "im0324" and records[0].label.any()
    assert not (tmp_path / "cache").exists()  # nothing to cache for an extracted folder


def test_env_var_selects_the_source(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("STARUNET_STARE_SOURCE", str(mirror))
    assert load_stare(root=tmp_path, ids=["im0001"])[0].id == "im0001"


# ------------------------------------------------------------------ the four bad-archive cases (+ variants)

def test_dotdot_member_is_refused_and_nothing_is_written(tmp_path):
    evil = tarfile.TarInfo("../escaped.txt")
    evil.size = 4
    source = make_mirror(tmp_path / "mirror", extra={"labels-ah.tar": [evil]})
    root = tmp_path / "cache"
    with pytest.raises(StareDataError, match=r"unsafe archive .*labels-ah\.tar.*'\.\./escaped\.txt'.*'\.\.'"):
        load_stare(source=source, root=root)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not any("labels-ah" in p.name for p in extraction_dirs(root))


def _member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("member, reason", [
    (_member("/etc/evil", tarfile.REGTYPE), "absolute path"),
    (_member("im0001.ah.ppm.gz.lnk", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
    (_member("hard", tarfile.LNKTYPE, "im0001.ah.ppm.gz"), "is a link"),
    (_member("dev", tarfile.CHRTYPE), "device"),
    (_member("fifo", tarfile.FIFOTYPE), "device"),
    (_member("sub/../../up", tarfile.REGTYPE), "'..'"),
    (_member("sub/im0001.ah.ppm.gz", tarfile.REGTYPE), "repeats the file name"),
])
def test_unsafe_members_are_refused(tmp_path, member, reason):
    archive = tmp_path / "labels-ah.tar"
    write_tar(archive, {"im0001.ah.ppm.gz": b"ok"}, [member])
    with pytest.raises(StareDataError, match=reason):
        stare._safe_extract(archive, tmp_path / "out")


def test_wrong_checksum_is_refused_and_not_cached(tmp_path):
    source = make_mirror(tmp_path / "mirror")
    with open(source / "labels-vk.tar", "ab") as fh:
        fh.write(b"\0" * 512)  # the copy no longer matches SHA256SUMS
    root = tmp_path / "cache"
    with pytest.raises(StareDataError, match=r"labels-vk\.tar has SHA-256 .* but SHA256SUMS says"):
        load_stare(source=source, root=root)
    assert not any("labels-vk" in p.name for p in extraction_dirs(root))


def test_missing_file_in_archive(tmp_path):
    source = make_mirror(tmp_path / "mirror", drop=("im0044.vk.ppm.gz",))
    with pytest.raises(StareDataError, match=r"labels-vk\.tar lacks 1 of its 20 files \(e\.g\. im0044\.vk\.ppm\.gz\)"):
        load_stare(source=source, root=tmp_path / "cache")


def test_missing_tar_and_missing_sha256sums(tmp_path):
    source = make_mirror(tmp_path / "mirror")
    (source / "stare-images.tar").unlink()
    with pytest.raises(StareDataError, match=r"stare-images\.tar is missing from the mirror"):
        load_stare(source=source, root=tmp_path / "cache")
    (source / "SHA256SUMS").unlink()
    with pytest.raises(StareDataError, match="has no SHA256SUMS"):
        load_stare(source=source, root=tmp_path / "cache")


def test_truncated_gz_names_the_file_and_the_fix(tmp_path):
    good = fake_files()["im0077.ppm.gz"]
    source = make_mirror(tmp_path / "mirror", replace={"im0077.ppm.gz": good[: len(good) // 2]})
    with pytest.raises(StareDataError, match=r"im0077\.ppm\.gz is truncated or corrupt.*delete the cache folder"):
        load_stare(source=source, root=tmp_path / "cache")


def test_truncated_pixels_and_non_binary_labels(tmp_path):
    short = pnm_bytes(np.zeros((H, W, 3), np.uint8))[:-10]
    grey = pnm_bytes(np.full((H, W), 128, np.uint8))
    source = make_mirror(tmp_path / "mirror", replace={"im0001.ppm.gz": gzip.compress(short),
                                                       "im0002.ah.ppm.gz": gzip.compress(grey)})
    with pytest.raises(StareDataError, match=r"im0001\.ppm\.gz holds 1270490 pixel bytes.*truncated"):
        load_stare(source=source, root=tmp_path / "cache", ids=["im0001"])
    with pytest.raises(StareDataError, match=r"im0002\.ah\.ppm\.gz has values other than 0 and 255"):
        load_stare(source=source, root=tmp_path / "cache", ids=["im0002"])


def test_truncated_tar_is_reported(tmp_path):
    archive = tmp_path / "stare-images.tar"
    write_tar(archive, {"im0001.ppm.gz": fake_files()["im0001.ppm.gz"]})
    archive.write_bytes(archive.read_bytes()[:2000])
    with pytest.raises(StareDataError, match=r"cannot read the archive .*stare-images\.tar.*truncated or corrupt"):
        stare._safe_extract(archive, tmp_path)


def test_bad_source_and_ids(tmp_path):
    with pytest.raises(StareDataError, match="is not a URL or an existing folder"):
        load_stare(source=tmp_path / "nope", root=tmp_path)
    with pytest.raises(StareDataError, match=r"lacks 60 STARE files"):
        load_stare(source=tmp_path, root=tmp_path / "cache")  # an empty folder
    with pytest.raises(ValueError, match="unknown STARE ids.*valid ids: im0001"):
        load_stare(source=tmp_path, ids=["im9999"])


# ------------------------------------------------------------------ the official URL path (pooch) on localhost

@pytest.fixture
def http_mirror(mirror):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"  # no trailing slash on purpose
    server.shutdown()


def test_download_with_wrong_official_hash_leaves_no_file(http_mirror, tmp_path):
    # the served tars are the fake ones, so the real official hashes cannot match
    with pytest.raises(StareDataError, match="does not match its official SHA-256"):
        load_stare(source=http_mirror, root=tmp_path)
    downloads = tmp_path / "downloads"
    assert not downloads.exists() or not any(downloads.iterdir())  # the bad download was discarded


def test_download_verifies_and_caches(http_mirror, mirror, tmp_path, monkeypatch):
    sums = dict(reversed(line.split()) for line in (mirror / "SHA256SUMS").read_text().splitlines())
    monkeypatch.setattr(stare, "OFFICIAL_SHA256", {k: sums[k] for k in ARCHIVE_MEMBERS})
    records = load_stare(source=http_mirror, root=tmp_path, ids=["im0082"])
    assert records[0].id == "im0082"
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == sorted(ARCHIVE_MEMBERS)


# ------------------------------------------------------------------ decoding, FOV, tensors

def test_read_pnm_handles_comments_and_rejects_garbage(tmp_path):
    label = np.zeros((5, 7), np.uint8)
    label[2, 3] = 255
    (tmp_path / "a.ppm").write_bytes(pnm_bytes(label, comment=True))
    np.testing.assert_array_equal(read_pnm(tmp_path / "a.ppm"), label)
    (tmp_path / "b.ppm").write_bytes(b"P3\n7 5\n255\n0 0 0")
    with pytest.raises(StareDataError, match="not a binary PGM/PPM"):
        read_pnm(tmp_path / "b.ppm")
    (tmp_path / "c.ppm").write_bytes(pnm_bytes(label).replace(b"255\n", b"65535\n", 1))
    with pytest.raises(StareDataError, match="maxval 65535"):
        read_pnm(tmp_path / "c.ppm")


def test_compute_fov_finds_a_disc_with_dark_holes():
    rows, cols = np.mgrid[:200, :240]
    disc = (rows - 100) ** 2 + (cols - 120) ** 2 < 90 ** 2
    image = np.zeros((200, 240, 3), np.uint8)
    image[disc] = (120, 60, 20)
    image[95:105, 100:140] = 0      # a dark lesion inside the disc: must stay inside the FOV
    image[5, 5] = (255, 255, 255)   # a bright speck outside: must not
    fov = compute_fov(image)
    assert fov.dtype == bool and (fov & disc).sum() / (fov | disc).sum() > 0.98
    assert fov[100, 120] and not fov[5, 5]
    assert not compute_fov(np.zeros((50, 60, 3), np.uint8)).any()
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        compute_fov(np.zeros((50, 60), np.uint8))


def test_image_to_tensor():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 14
    tensor = image_to_tensor(image)
    assert tensor.shape == (3, 2, 3) and tensor.dtype == torch.float32
    assert tensor[1, 0, 2].item() == pytest.approx(image[0, 2, 1] / 255)
    assert image_to_tensor(np.full((1, 1, 3), 255, np.uint8)).max().item() == 1.0
    with pytest.raises(ValueError, match="uint8"):
        image_to_tensor(image.astype(np.float32))


# ------------------------------------------------------------------ splits

def test_default_split_is_pinned():
    split = split_ids()
    assert split == Split(
        train=("im0001", "im0002", "im0003", "im0005", "im0077", "im0081", "im0082", "im0139"),
        val=("im0004", "im0044"),
        test=STARE_IDS[10:],
    )


def test_split_properties_and_errors():
    split = split_ids(seed=7)
    assert set(split.train) | set(split.val) | set(split.test) == set(STARE_IDS)
    assert len(split.train + split.val + split.test) == 20 and len(split.val) == 2
    assert split_ids(seed=7) == split
    assert split_ids(val_ratio=0).val == ()
    assert split_ids(n_test=0).test == ()
    assert split_ids(ids=reversed(STARE_IDS)) == split_ids()  # order of the input does not matter
    with pytest.raises(ValueError, match="val_ratio"):
        split_ids(val_ratio=1.0)
    with pytest.raises(ValueError, match="n_test"):
        split_ids(n_test=20)
    with pytest.raises(ValueError, match="leaves no training ids"):
        split_ids(val_ratio=0.95)
    with pytest.raises(ValueError, match="unknown STARE ids"):
        split_ids(ids=["im0001", "x"])


# ------------------------------------------------------------------ patches

def tiny_record(stare_id="im0001", shape=(40, 50), fov=None, seed=0) -> StareRecord:
    rng = np.random.default_rng(seed)
    fov = np.ones(shape, bool) if fov is None else fov
    return StareRecord(id=stare_id, image=rng.integers(0, 256, (*shape, 3), dtype=np.uint8),
                       label=rng.random(shape) < 0.2, label_vk=rng.random(shape) < 0.2, fov=fov)


def test_patch_is_centred_on_a_fov_pixel():
    fov = np.zeros((40, 50), bool)
    fov[25, 30] = True  # a one-pixel FOV: every patch is centred there
    record = tiny_record(fov=fov)
    image, label, patch_fov = PatchDataset([record], patch_size=16, samples_per_epoch=3, augment=False)[1]
    torch.testing.assert_close(image, image_to_tensor(record.image)[:, 17:33, 22:38], rtol=0, atol=0)
    assert torch.equal(label[0], torch.from_numpy(record.label[17:33, 22:38]).float())
    assert patch_fov[0, 8, 8] == 1 and patch_fov.sum() == 1


def test_patch_near_the_border_stays_inside_the_image():
    fov = np.zeros((40, 50), bool)
    fov[0, 49] = True
    record = tiny_record(fov=fov)
    image, _, patch_fov = PatchDataset([record], patch_size=16, augment=False)[0]
    torch.testing.assert_close(image, image_to_tensor(record.image)[:, 0:16, 34:50], rtol=0, atol=0)
    assert patch_fov[0, 0, 15] == 1


def test_patches_are_a_pure_function_of_seed_epoch_index():
    records = [tiny_record("im0001", seed=1), tiny_record("im0002", seed=2)]
    a = PatchDataset(records, patch_size=16, samples_per_epoch=20, color_jitter=0.1)
    b = PatchDataset(records, patch_size=16, samples_per_epoch=20, color_jitter=0.1)
    for i in (0, 7, 19):
        assert all(torch.equal(x, y) for x, y in zip(a[i], b[i]))
    first = torch.stack([a[i][0] for i in range(20)])
    a.set_epoch(1)
    assert not torch.equal(first, torch.stack([a[i][0] for i in range(20)]))
    a.set_epoch(0)
    assert torch.equal(first, torch.stack([a[i][0] for i in range(20)]))
    c = PatchDataset(records, patch_size=16, samples_per_epoch=20, color_jitter=0.1, seed=1)
    assert not torch.equal(first, torch.stack([c[i][0] for i in range(20)]))


def test_dataloader_workers_do_not_change_the_stream():
    ds = PatchDataset([tiny_record(seed=3)], patch_size=16, samples_per_epoch=12)
    ds.set_epoch(2)
    expected = torch.stack([ds[i][1] for i in range(12)])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    assert torch.equal(torch.cat([labels for _, labels, _ in loader]), expected)


def test_augmentation_is_a_symmetry_of_the_same_patch_and_jitter_is_mild():
    record = tiny_record(seed=4)
    plain = PatchDataset([record], patch_size=16, samples_per_epoch=30, augment=False)
    augmented = PatchDataset([record], patch_size=16, samples_per_epoch=30, augment=True)
    jittered = PatchDataset([record], patch_size=16, samples_per_epoch=30, augment=False, color_jitter=0.2)
    used = set()
    for i in range(30):
        x, y, f = plain[i]
        xa, ya, fa = augmented[i]
        matches = [t for t in range(8) if torch.equal(data._dihedral(x, t), xa)]
        assert matches and torch.equal(data._dihedral(y, matches[0]), ya)
        used.update(matches)
        xj, yj, _ = jittered[i]
        assert torch.equal(yj, y) and 0 <= xj.min() and xj.max() <= 1
        assert (xj - x).abs().max() <= 0.2 + 1e-6  # |gain - 1| <= color_jitter on [0, 1] values
    assert len(used) >= 6  # the transforms are actually drawn


def test_patch_dataset_errors():
    with pytest.raises(ValueError, match="exceeds record im0001"):
        PatchDataset([tiny_record()], patch_size=48)
    with pytest.raises(ValueError, match="empty FOV"):
        PatchDataset([tiny_record(fov=np.zeros((40, 50), bool))], patch_size=16)
    with pytest.raises(ValueError, match="at least one record"):
        PatchDataset([])
    ds = PatchDataset([tiny_record()], patch_size=16, samples_per_epoch=5)
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(ValueError, match="epoch"):
        ds.set_epoch(-1)


def masks_record(label: np.ndarray, fov: np.ndarray, stare_id: str = "im0001") -> StareRecord:
    return StareRecord(id=stare_id, image=np.zeros((*label.shape, 3), np.uint8), label=label,
                       label_vk=label, fov=fov)


def test_vessel_fraction_pools_the_pixels_of_all_records():
    rows, cols = np.mgrid[:4, :5]
    a = masks_record(label=(cols == 0), fov=(rows < 2))      # 4 vessel pixels, 2 of them in a 10-pixel FOV
    b = masks_record(label=(rows == 3), fov=np.ones((4, 5), bool), stare_id="im0002")  # 5 in 20
    assert vessel_fraction([a, b]) == 7 / 30               # pooled, not the mean of 2/10 and 5/20
    assert vessel_fraction([a, b], within_fov=False) == 9 / 40
    with pytest.raises(ValueError, match="no pixels to count: pass at least one record"):
        vessel_fraction([])


def test_patch_vessel_fraction_counts_the_pixels_of_the_first_patches():
    rows, cols = np.mgrid[:16, :16]
    record = masks_record(label=(cols < 4) | (rows == 15), fov=(rows < 12))  # 48 of 192 inside, 76 of 256 in all
    whole = PatchDataset([record], patch_size=16, samples_per_epoch=5)  # every patch: the image, flipped/rotated
    assert patch_vessel_fraction(whole, 5) == vessel_fraction([record]) == 48 / 192
    assert patch_vessel_fraction(whole, 5, within_fov=False) == vessel_fraction([record], within_fov=False) == 76 / 256
    corner = PatchDataset([masks_record(label=(rows < 2), fov=(rows < 2))], patch_size=8, samples_per_epoch=3,
                          augment=False)  # every patch: the top 8 rows, the first 2 of them vessels
    assert patch_vessel_fraction(corner, 3) == 1.0 and patch_vessel_fraction(corner, 3, within_fov=False) == 0.25
    for n in (0, 6, 2.5):
        with pytest.raises(ValueError, match="n must be an integer from 1 to the dataset's 5 samples"):
            patch_vessel_fraction(whole, n)


# ------------------------------------------------------------------ tiling


# ------------------------------------------------------------------ command line

def test_fetch_cli(mirror, tmp_path, capsys):
    assert stare.cli(["--source", str(mirror), "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 21 and out[0].startswith("im0001  ok") and "20 records verified" in out[-1]
    assert stare.cli(["--source", str(tmp_path / "nope"), "--root", str(tmp_path)]) == 2  # bad input
    assert "is not a URL or an existing folder" in capsys.readouterr().err


# ------------------------------------------------------------------ the real STARE data

def test_real_records_have_the_contract_shapes(stare_records):
    assert [r.id for r in stare_records] == list(STARE_IDS)
    for r in stare_records:
        assert r.image.shape == (605, 700, 3) and r.image.dtype == np.uint8
        for mask in (r.label, r.label_vk, r.fov):
            assert mask.shape == (605, 700) and mask.dtype == bool
    # the published ranges (data README): vessels (ah) 4.3-10.2 % of the image, FOV ~74 %
    fractions = [r.label.mean() for r in stare_records]
    assert 0.04 < min(fractions) and max(fractions) < 0.105
    assert 0.70 < np.mean([r.fov.mean() for r in stare_records]) < 0.78


def test_real_patch_stream_keeps_the_class_balance_of_the_training_images(stare_records):
    # what notebook 01 prints: vessels are 10.3 % of the training images' FOV pixels,
    # and about as many of the FOV pixels of the first 1000 patches
    by_id = {r.id: r for r in stare_records}
    train = [by_id[i] for i in split_ids().train]
    assert round(vessel_fraction(train), 3) == 0.103
    assert round(vessel_fraction(train, within_fov=False), 3) == 0.076
    patches = PatchDataset(train, patch_size=96, samples_per_epoch=1000, seed=2024)
    assert abs(patch_vessel_fraction(patches, 1000) - vessel_fraction(train)) < 0.005


def test_real_fov_matches_reference_masks(stare_records, stare_source):
    from PIL import Image

    reference = Path(stare_source or "") / "reference-fov-masks.tar"
    if not reference.is_file():
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true but {reference} is missing")
        pytest.skip("the reference FOV masks ship only with the local mirror")
    with tarfile.open(reference) as tar:
        for r in stare_records:
            ref = np.asarray(Image.open(io.BytesIO(tar.extractfile(f"{r.id}.fov.png").read()))) > 0
            ref = ref if ref.ndim == 2 else ref[..., 0]
            iou = (ref & r.fov).sum() / (ref | r.fov).sum()
            assert iou >= 0.95, f"{r.id}: FOV IoU {iou:.3f} < 0.95"


def test_lesson_01_result_is_computed_from_the_data(stare_records, monkeypatch):
    from starunet import lessons
    from starunet.metrics import human_baseline

    monkeypatch.setattr(stare, "load_stare", lambda *args, **kwargs: stare_records)
    lines = lessons.data_result()
    test = [r for r in stare_records if r.id in split_ids().test]
    assert 3 <= len(lines) <= 5
    assert "8 training, 2 validation and 10 test images" in lines[0]
    assert f"{vessel_fraction(stare_records):.1%} of the pixels" in lines[1]
    assert f"{1 - vessel_fraction(test):.1%} accurate" in lines[1]
    assert f"F1 {human_baseline(stare_records)['f1']:.3f}" in lines[2]


# ------------------------------------------------------------------ figures (notebook 01)

def test_data_figures_build_and_photos_are_saved_at_the_photo_resolution():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from starunet import plots_data
    from starunet.inference import Tiler
    from starunet.metrics import segmentation_metrics

    from fakes import fake_records

    records = fake_records(2, shape=(48, 52))
    for r in records:
        r.label_vk = r.label ^ (np.random.default_rng(1).random(r.label.shape) < 0.02)
    photos = [plots_data.plot_stare_records(records),
              plots_data.plot_fov_method(records[0]),
              plots_data.plot_patches(PatchDataset(records, patch_size=16, samples_per_epoch=4, seed=0), 4, columns=4),
              plots_data.plot_tiles(records[0], Tiler(48, 52, patch_size=16, stride=8)),
              plots_data.plot_observer_agreement(records[0])]
    assert [fig.dpi for fig in photos] == [plots_data.PHOTO_DPI] * len(photos)
    split = Split(train=(records[0].id,), val=(), test=(records[1].id,))
    pooled = segmentation_metrics([r.label_vk.astype(np.float32) for r in records], [r.label for r in records],
                                  [r.fov for r in records])
    plots = [plots_data.plot_vessel_fractions(stare.dataset_summary(records), split),
             plots_data.plot_human_baseline(pooled, {r.id: pooled for r in records})]
    assert all(fig.dpi != plots_data.PHOTO_DPI for fig in plots)  # line plots keep the default resolution
    plt.close("all")
