"""Two studies that share a Series Instance UID are kept apart: the second is refused at
receive with 0xC210 and the reason, the first series is stored whole and unmixed."""

from __future__ import annotations

import pydicom
import pytest
from pynetdicom import AE
from sqlalchemy import select

from dicom_node.db.models import Instance, Series, Study
from dicom_node.training.synthetic import with_new_uids
from tests.conftest import run_storescu
from tests.integration.test_fuzz_receive import Node

pytestmark = pytest.mark.integration

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def test_a_second_study_reusing_a_series_uid_is_refused(tmp_path, head_ct_dir, storescu):
    node = Node(tmp_path / "node")
    node.scp.start()
    try:
        files = sorted(head_ct_dir.glob("*.dcm"))[:4]
        first = with_new_uids([pydicom.dcmread(p) for p in files], seed=51)
        second = with_new_uids([pydicom.dcmread(p) for p in files], seed=52)
        for ds in second:  # another study, same series UID (a misconfigured anonymiser)
            ds.SeriesInstanceUID = first[0].SeriesInstanceUID
        paths = []
        for name, series in (("a", first), ("b", second)):
            for n, ds in enumerate(series):
                path = tmp_path / f"{name}{n}.dcm"
                ds.save_as(path, enforce_file_format=True)
                paths.append(path)
        assert run_storescu(storescu, node.scp.port, paths[:4]).returncode == 0
        # The second study's instances, over pynetdicom to read the status and comment.
        ae = AE(ae_title="OTHER")
        ae.add_requested_context(CT_IMAGE_STORAGE)
        assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="DICOM_NODE")
        assert assoc.is_established
        try:
            statuses = [assoc.send_c_store(pydicom.dcmread(p)) for p in paths[4:]]
        finally:
            assoc.release()
        for status in statuses:
            assert status.Status == 0xC210, hex(status.Status)
            assert "another study" in str(status.ErrorComment), status.ErrorComment
        with node.factory() as session:
            studies = session.scalars(
                select(Study.study_instance_uid).join(Series).join(Instance)
            ).all()
        assert set(studies) == {str(first[0].StudyInstanceUID)}
        assert node.count() == 4
        node.check_spool_and_database_agree()
    finally:
        node.close()
