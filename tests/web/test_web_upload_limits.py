"""Upload caps (issue 13 item 12): zip bombs, lying headers, concurrency and the disk watermark.

A 1 MB zip of 1 GiB of zeros once took the serve process from 305 MiB to 2.3 GiB. Here the
caps are set low in the node's settings and the bombs are small (64 MiB of zeros, ~64 KiB
compressed), so the tests are quick; the memory of the test process (the dashboard runs in
it, in a thread) is traced with :mod:`tracemalloc` and must stay far below the unpacked size.
"""

from __future__ import annotations

import struct
import tracemalloc
import zipfile
from io import BytesIO

import numpy as np
import pytest
import requests
from sqlalchemy import select

from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import Instance, Series
from dicom_node.series.volume import read_datasets
from dicom_node.training.synthetic import with_new_uids
from dicom_node.web import WebServer, create_app
from tests.web.conftest import WebClient, add_user, encode, node_settings

MIB = 1024**2
CAPS = {
    "upload_max_member_bytes": 32 * MIB,
    "upload_max_total_bytes": 40 * MIB,
    "upload_max_compression_ratio": 200.0,
    "upload_max_members": 5,
    "upload_max_concurrent": 1,
}
#: Peak of traced Python allocations allowed while a 64 MiB bomb is refused.
MAX_PEAK_BYTES = 16 * MIB


def _serve(base, **overrides):
    settings = node_settings(base, **overrides)
    session_factory = make_session_factory(make_engine(settings.storage.url))
    add_user(settings, "ada", "admin")
    app = create_app(settings, session_factory)
    server = WebServer(app, "127.0.0.1", 0)
    server.start()
    return settings, session_factory, app, server


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """A dashboard on an empty database with low upload caps."""
    settings, session_factory, app, server = _serve(tmp_path_factory.mktemp("caps"), web=CAPS)
    try:
        yield settings, session_factory, app, server
    finally:
        server.stop()


@pytest.fixture
def client(capped) -> WebClient:
    c = WebClient(capped[3].url)
    assert c.login("ada").status_code == 303
    return c


def zip_of(members: dict[str, bytes | int], compression=zipfile.ZIP_DEFLATED) -> bytes:
    """A zip; an int member is that many zeros, written in 1 MiB chunks (never whole)."""
    out = BytesIO()
    with zipfile.ZipFile(out, "w", compression, compresslevel=9) as zf:
        for name, data in members.items():
            if isinstance(data, int):
                with zf.open(name, "w", force_zip64=False) as handle:
                    for _ in range(data // MIB):
                        handle.write(bytes(MIB))
            else:
                zf.writestr(name, data)
    return out.getvalue()


def lie_about_size(archive: bytes, declared: int) -> bytes:
    """Set the uncompressed size of every member to ``declared`` in both headers (APPNOTE 4.3)."""
    data = bytearray(archive)
    pos = 0
    while (pos := data.find(b"PK\x03\x04", pos)) >= 0:  # local file header, size at +22
        struct.pack_into("<I", data, pos + 22, declared)
        pos += 4
    pos = 0
    while (pos := data.find(b"PK\x01\x02", pos)) >= 0:  # central directory, size at +24
        struct.pack_into("<I", data, pos + 24, declared)
        pos += 4
    return bytes(data)


def low_entropy(size: int, seed: int) -> bytes:
    """Bytes that deflate about 2:1 (16 symbols), under any sane compression-ratio cap."""
    return np.random.default_rng(seed).integers(0, 16, size, dtype=np.uint8).tobytes()


def post_zip(client: WebClient, archive: bytes, name: str = "bomb.zip"):
    token = client.token("/upload")
    return client.post(
        "/upload",
        data={"csrf_token": token},
        files=[("files", (name, archive, "application/zip"))],
    )


def traced_post(client: WebClient, archive: bytes, name: str = "bomb.zip"):
    token = client.token("/upload")
    tracemalloc.start()
    try:
        response = client.post(
            "/upload",
            data={"csrf_token": token},
            files=[("files", (name, archive, "application/zip"))],
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return response, peak


def no_partial_files(settings) -> bool:
    tmp = settings.storage.base_dir / "upload-tmp"
    return not tmp.exists() or not any(tmp.iterdir())


def test_upload_refuses_a_zip_bomb_over_the_member_cap_in_bounded_memory(capped, client):
    archive = zip_of({"zeros.bin": 64 * MIB})
    assert len(archive) < 256 * 1024
    response, peak = traced_post(client, archive)
    print(f"bomb (honest header): peak {peak / MIB:.2f} MiB for 64 MiB unpacked")
    assert response.status_code == 413, response.text
    assert "member bomb.zip:zeros.bin expands past web.upload_max_member_bytes" in response.text
    assert peak < MAX_PEAK_BYTES
    assert no_partial_files(capped[0])


def test_upload_refuses_a_bomb_whose_header_lies_by_counting_the_bytes(capped, client):
    archive = lie_about_size(zip_of({"zeros.bin": 64 * MIB}), 1000)
    assert zipfile.ZipFile(BytesIO(archive)).getinfo("zeros.bin").file_size == 1000
    response, peak = traced_post(client, archive)
    print(f"bomb (header says 1000 bytes): peak {peak / MIB:.2f} MiB for 64 MiB unpacked")
    assert response.status_code == 413, response.text
    assert "bomb.zip:zeros.bin: compression ratio" in response.text
    assert ":1 over web.upload_max_compression_ratio" in response.text
    assert peak < MAX_PEAK_BYTES
    assert no_partial_files(capped[0])


def test_upload_refuses_a_member_larger_than_its_header_says(capped, client):
    # ~2:1 compressible, so only the counted size can refuse it (not the ratio, not the header).
    archive = lie_about_size(zip_of({"big.bin": low_entropy(36 * MIB, 1)}), 1000)
    response = post_zip(client, archive, "lying.zip")
    assert response.status_code == 413, response.text
    assert "member lying.zip:big.bin expands past web.upload_max_member_bytes" in response.text
    assert no_partial_files(capped[0])


def test_upload_refuses_an_archive_over_the_total_cap(capped, client):
    archive = zip_of({"a.bin": low_entropy(22 * MIB, 2), "b.bin": low_entropy(22 * MIB, 3)})
    response = post_zip(client, archive, "two.zip")
    assert response.status_code == 413, response.text
    assert "archive expands past web.upload_max_total_bytes" in response.text
    assert "two.zip:b.bin" in response.text


def test_upload_refuses_more_members_than_the_cap(capped, client):
    archive = zip_of({f"f{i}.txt": b"x" for i in range(6)})
    response = post_zip(client, archive, "many.zip")
    assert response.status_code == 413, response.text
    assert "more than web.upload_max_members members" in response.text


def test_upload_answers_busy_when_every_slot_is_taken(capped, client):
    uploader = capped[2].state.ctx.uploader
    assert uploader.try_acquire()  # web.upload_max_concurrent = 1: the one slot
    try:
        response = post_zip(client, zip_of({"a.txt": b"x"}))
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) > 0
        assert "web.upload_max_concurrent" in response.text
    finally:
        uploader.release()
    assert post_zip(client, zip_of({"a.txt": b"x"})).status_code == 400  # free again: not DICOM


def test_upload_of_a_good_zip_of_dicom_still_works_under_the_caps(capped, client, head_ct_dir):
    datasets = with_new_uids(read_datasets(sorted(head_ct_dir.glob("*.dcm"))[:3]), seed=21)
    archive = zip_of(
        {
            **{f"study/IM{i:04d}": encode(ds) for i, ds in enumerate(datasets)},
            "study/inner.zip": zip_of({"x.dcm": b"x"}),
        }
    )
    response = post_zip(client, archive, "study.zip")
    assert response.status_code == 200, response.text
    assert 'id="count-stored">3<' in response.text
    assert "a zip inside a zip is not unpacked" in response.text
    series_uid = str(datasets[0].SeriesInstanceUID)
    with capped[1]() as session:
        rows = session.scalars(
            select(Instance).join(Series).where(Series.series_instance_uid == series_uid)
        ).all()
    assert len(rows) == 3
    assert no_partial_files(capped[0])


def test_upload_is_refused_below_the_disk_watermark(tmp_path, head_ct_dir):
    settings, session_factory, _, server = _serve(
        tmp_path, dicom={"min_free_disk_bytes": 2**62}, web={"upload_max_concurrent": 1}
    )
    try:
        c = WebClient(server.url)
        assert c.login("ada").status_code == 303
        datasets = with_new_uids(read_datasets(sorted(head_ct_dir.glob("*.dcm"))[:1]), seed=22)
        response = post_zip(c, zip_of({"IM0": encode(datasets[0])}), "one.zip")
        assert response.status_code == 507, response.text
        assert "dicom.min_free_disk_bytes" in response.text
        with session_factory() as session:
            assert session.scalars(select(Instance)).all() == []
        assert no_partial_files(settings)
        # The slot was given back although the upload was refused.
        assert server is not None and _slot_free(c)
    finally:
        server.stop()


def _slot_free(c: WebClient) -> bool:
    response = post_zip(c, b"not a zip", "x.dcm")
    return response.status_code != 503


def test_the_watermark_also_stops_an_upload_while_it_is_written(tmp_path):
    from dicom_node.web.upload import UploadIngest, UploadLimits, UploadNoRoom

    class FillingDisk:  # room for 3 MiB, then below the watermark
        admitted = 0

        def has_room(self, size):
            self.admitted += size
            if self.admitted > 3 * MIB:
                return False, "1 bytes free, 2 must remain (dicom.min_free_disk_bytes)"
            return True, ""

    tmp = tmp_path / "upload-tmp"
    uploader = UploadIngest(None, UploadLimits(), FillingDisk(), tmp)
    archive = zip_of({"big.bin": low_entropy(8 * MIB, 4)})
    with pytest.raises(UploadNoRoom) as refused:
        uploader.ingest_files([("full.zip", BytesIO(archive))])
    assert refused.value.status == 507
    assert "full.zip:big.bin" in refused.value.message
    assert "dicom.min_free_disk_bytes" in refused.value.message
    assert refused.value.report.refused == refused.value.message
    assert not any(tmp.iterdir())


def test_a_chunked_upload_body_is_cut_off_at_the_request_cap(tmp_path):
    # Without Content-Length (Transfer-Encoding: chunked) only the bytes read can be counted.
    limit = 2 * MIB
    settings, session_factory, _, server = _serve(tmp_path, web={"max_upload_bytes": limit})
    try:
        c = WebClient(server.url)
        assert c.login("ada").status_code == 303
        token = c.token("/upload")
        boundary = "dicom-node-test-boundary"
        sent = [0]

        def body():
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
                f'{token}\r\n--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                'filename="big.dcm"\r\nContent-Type: application/dicom\r\n\r\n'
            ).encode()
            yield head
            for _ in range(limit // (256 * 1024) * 4):  # 4x the cap, 256 KiB at a time
                sent[0] += 256 * 1024
                yield bytes(256 * 1024)
            yield f"\r\n--{boundary}--\r\n".encode()

        try:
            response = c.post(
                "/upload",
                data=body(),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
        except requests.ConnectionError:  # the server may close before the client is done
            response = None
        status = None if response is None else response.status_code
        print(f"chunked body: {sent[0] / MIB:.1f} MiB sent, answer {status}")
        assert response is None or response.status_code == 413, response.text
        if response is not None:
            assert f"exceeds {limit} bytes" in response.text
        with session_factory() as session:
            assert session.scalars(select(Instance)).all() == []
        # The slot was given back: a normal upload is answered (400: not DICOM), not 503.
        assert post_zip(c, b"not DICOM", "x.dcm").status_code == 400
    finally:
        server.stop()
