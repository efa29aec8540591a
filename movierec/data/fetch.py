"""Download MovieLens sets into ``MOVIEREC_DATA_DIR/NAME``, verified by checksum.

GroupLens's official archives come first. MovieLens 100K has a fallback for networks that only
reach PyPI: the real data ships inside the wheel of ``recbole==1.2.1``; we download that wheel
through the PyPI simple index, check the wheel's pinned sha256, rebuild GroupLens's ``u.data``,
``u.item`` and ``u.user`` from it and check ``u.data`` against its known sha256. The index may
also be a local directory (``file:///path``, holding the wheel itself or ``recbole/<wheel>``), as
in a container without a network, whose image carries the wheel; a local one is tried first.

A finished set holds a ``.movierec-complete`` marker; without it the directory is rebuilt, so a
download killed halfway is never mistaken for data. Everything is written into a temporary
directory beside the target and renamed into place at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
import urllib.parse
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

COMPLETE_MARKER = ".movierec-complete"
GROUPLENS = "https://files.grouplens.org/datasets/movielens"

RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_ML100K = "recbole/dataset_example/ml-100k/"
#: sha256 of ``u.data`` as GroupLens ships it (and as rebuilt from the wheel).
ML100K_UDATA_SHA256 = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"

# u.item's 19 genre flags, in GroupLens's order (u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)

Progress = Callable[[int, int | None], None]


class FetchError(RuntimeError):
    """A data set could not be fetched or failed verification; the message says from where and why."""


@dataclass(frozen=True)
class Dataset:
    """A MovieLens archive: where GroupLens publishes it and the MD5 it publishes beside it."""

    name: str
    url: str
    md5: str | None  # None: the set is revised in place; read the published .md5 at download time
    ratings: str  # the ratings file inside the set, to check the layout after extracting


DATASETS: dict[str, Dataset] = {
    "ml-100k": Dataset("ml-100k", f"{GROUPLENS}/ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", "u.data"),
    "ml-1m": Dataset("ml-1m", f"{GROUPLENS}/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906", "ratings.dat"),
    "ml-latest-small": Dataset("ml-latest-small", f"{GROUPLENS}/ml-latest-small.zip", None, "ratings.csv"),
    "ml-25m": Dataset("ml-25m", f"{GROUPLENS}/ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada", "ratings.csv"),
}


def is_complete(directory: Path) -> bool:
    """True when ``directory`` holds a finished fetch."""
    return (directory / COMPLETE_MARKER).is_file()


def fetch(
    name: str,
    data_dir: Path | str,
    *,
    index_url: str = "https://pypi.org/simple",
    timeout: float = 60.0,
    progress: Progress | None = None,
    client: httpx.Client | None = None,
) -> Path:
    """Make MovieLens set ``name`` available under ``data_dir/name`` and return that directory.

    Does nothing when the set is already there. Raises FetchError naming every source tried
    when none worked, or when a download does not match its checksum.
    """
    if name not in DATASETS:
        raise FetchError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    dataset = DATASETS[name]
    target = Path(data_dir) / name
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    own_client = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=True)
    failures: list[str] = []
    try:
        sources: list[tuple[str, Callable[[Path], dict[str, str]]]] = [
            (dataset.url, lambda tmp: _from_grouplens(http, dataset, tmp, progress)),
        ]
        if name == "ml-100k":
            recbole = (f"{index_url.rstrip('/')}/recbole/ ({RECBOLE_WHEEL})",
                       lambda tmp: _from_recbole(http, index_url, tmp, progress))
            # A local copy needs no network: try it before GroupLens.
            sources.insert(0 if _local_dir(index_url) else len(sources), recbole)
        for where, build in sources:
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
            try:
                provenance = build(tmp)
                (tmp / COMPLETE_MARKER).write_text(json.dumps(provenance, indent=2) + "\n")
                if is_complete(target):
                    return target  # another process finished the same fetch meanwhile
                if target.exists():
                    shutil.rmtree(target)  # an earlier, unfinished fetch
                tmp.rename(target)
                return target
            except (httpx.HTTPError, FetchError, zipfile.BadZipFile, OSError) as exc:
                failures.append(f"{where}: {_describe(exc)}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if own_client:
            http.close()
    raise FetchError(f"could not fetch {name}:\n  " + "\n  ".join(failures))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.ConnectError | httpx.TimeoutException):
        return f"unreachable ({exc.__class__.__name__}: {exc})"
    return str(exc) or exc.__class__.__name__


def _download(http: httpx.Client, url: str, progress: Progress | None) -> bytes:
    buffer = io.BytesIO()
    with http.stream("GET", url) as response:
        response.raise_for_status()
        total = int(response.headers.get("content-length", 0)) or None
        for block in response.iter_bytes(1 << 20):
            buffer.write(block)
            if progress:
                progress(buffer.tell(), total)
    return buffer.getvalue()


def _from_grouplens(http: httpx.Client, dataset: Dataset, tmp: Path, progress: Progress | None) -> dict[str, str]:
    expected = dataset.md5
    if expected is None:
        published = http.get(dataset.url + ".md5")
        published.raise_for_status()
        expected = _parse_md5_file(published.text)
    payload = _download(http, dataset.url, progress)
    actual = hashlib.md5(payload, usedforsecurity=False).hexdigest()
    if actual != expected:
        raise FetchError(f"MD5 {actual} does not match the published {expected}")
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        prefix = f"{dataset.name}/"
        for member in archive.infolist():
            if member.is_dir() or not member.filename.startswith(prefix):
                continue
            relative = Path(member.filename[len(prefix):])
            if relative.is_absolute() or ".." in relative.parts:
                raise FetchError(f"archive member {member.filename!r} escapes the data directory")
            out = tmp / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
    if not (tmp / dataset.ratings).is_file():
        raise FetchError(f"archive has no {dataset.name}/{dataset.ratings}")
    return {"source": dataset.url, "md5": actual}


def _parse_md5_file(text: str) -> str:
    # GroupLens publishes "MD5 (ml-latest-small.zip) = <hex>"; md5sum writes "<hex>  file".
    for token in text.replace("=", " ").split():
        if len(token) == 32 and all(c in "0123456789abcdef" for c in token.lower()):
            return token.lower()
    raise FetchError("published .md5 file holds no MD5")


def _local_dir(index_url: str) -> Path | None:
    """The directory of a ``file://`` index URL, else None."""
    if not index_url.startswith("file://"):
        return None
    return Path(urllib.parse.unquote(urllib.parse.urlparse(index_url).path))


def _recbole_wheel(http: httpx.Client, index_url: str, progress: Progress | None) -> tuple[bytes, str]:
    """recbole's wheel and where it came from: a local directory, or the index's listing."""
    local = _local_dir(index_url)
    if local is not None:
        for path in (local / "recbole" / RECBOLE_WHEEL, local / RECBOLE_WHEEL):
            if path.is_file():
                return path.read_bytes(), path.as_uri()
        raise FetchError(f"neither {local}/{RECBOLE_WHEEL} nor {local}/recbole/{RECBOLE_WHEEL} exists")
    listing = http.get(
        f"{index_url.rstrip('/')}/recbole/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    listing.raise_for_status()
    try:
        files = listing.json()["files"]
        entry = next(f for f in files if f["filename"] == RECBOLE_WHEEL)
    except (ValueError, KeyError, StopIteration) as exc:
        raise FetchError(f"the index does not list {RECBOLE_WHEEL}") from exc
    url = str(httpx.URL(str(listing.url)).join(entry["url"]))
    return _download(http, url, progress), url


def _from_recbole(http: httpx.Client, index_url: str, tmp: Path, progress: Progress | None) -> dict[str, str]:
    wheel, url = _recbole_wheel(http, index_url, progress)
    digest = hashlib.sha256(wheel).hexdigest()
    if digest != RECBOLE_WHEEL_SHA256:
        raise FetchError(f"{RECBOLE_WHEEL} sha256 {digest} is not the pinned {RECBOLE_WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        inter = archive.read(RECBOLE_ML100K + "ml-100k.inter").decode("utf-8")
        items = archive.read(RECBOLE_ML100K + "ml-100k.item").decode("utf-8")
        users = archive.read(RECBOLE_ML100K + "ml-100k.user").decode("utf-8")
    udata = _rebuild_udata(inter)
    udata_sha = hashlib.sha256(udata).hexdigest()
    if udata_sha != ML100K_UDATA_SHA256:
        raise FetchError(f"u.data rebuilt from {RECBOLE_WHEEL} has sha256 {udata_sha}, expected {ML100K_UDATA_SHA256}")
    (tmp / "u.data").write_bytes(udata)
    (tmp / "u.item").write_bytes(_rebuild_uitem(items))
    (tmp / "u.user").write_bytes(_rebuild_uuser(users))
    (tmp / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)), encoding="latin-1")
    (tmp / "README.movierec").write_text(
        "MovieLens 100K (F. Maxwell Harper and Joseph A. Konstan, 2015, ACM TiiS 5(4)), rebuilt by movierec from\n"
        f"the copy inside the PyPI wheel {RECBOLE_WHEEL} because GroupLens was unreachable.\n"
        "u.data is byte-identical to GroupLens's; u.item keeps ids, titles, release years and genres\n"
        "(release dates are reduced to 01-Jan-YEAR and IMDb URLs are not in the wheel).\n"
    )
    return {"source": url, "sha256": digest, "u.data sha256": udata_sha}


def _rebuild_udata(inter: str) -> bytes:
    out = []
    for line in inter.splitlines()[1:]:
        user, item, rating, stamp = line.split("\t")
        out.append(f"{user}\t{item}\t{int(float(rating))}\t{int(float(stamp))}\n")
    return "".join(out).encode("ascii")


def _rebuild_uitem(items: str) -> bytes:
    rows = []
    for line in items.splitlines()[1:]:
        item, title, year, genres = line.split("\t")
        if not year.isdigit():
            # Movie 267 has no title or date in GroupLens's u.item; the wheel misspells it "unkonwn".
            title, year = "unknown", ""
        names = set(genres.split())
        flags = "|".join("1" if g in names else "0" for g in ML100K_GENRES)
        date = f"01-Jan-{year}" if year else ""
        full_title = f"{title} ({year})" if year else title
        # movie id | title | release date | video release date | IMDb URL | 19 genre flags
        rows.append(f"{item}|{full_title}|{date}|||{flags}\n")
    return "".join(rows).encode("latin-1", errors="replace")


def _rebuild_uuser(users: str) -> bytes:
    rows = [line.replace("\t", "|") + "\n" for line in users.splitlines()[1:]]
    return "".join(rows).encode("latin-1", errors="replace")
