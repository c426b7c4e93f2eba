"""Password checks: an unknown user name costs what a wrong password costs."""

from __future__ import annotations

from argon2 import PasswordHasher

from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.users import authenticate, create_user


def test_unknown_user_costs_one_hash_verification_like_a_wrong_password(tmp_path, monkeypatch):
    """Counts Argon2 runs instead of timing them (tests never assert on wall time)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    factory = make_session_factory(engine)
    with factory() as session:
        create_user(session, "alice", "correct horse battery", "viewer")
        session.commit()
    runs: list[str] = []
    real_hash, real_verify = PasswordHasher.hash, PasswordHasher.verify

    def counting_hash(self, *args, **kwargs):
        runs.append("hash")
        return real_hash(self, *args, **kwargs)

    def counting_verify(self, *args, **kwargs):
        runs.append("verify")
        return real_verify(self, *args, **kwargs)

    monkeypatch.setattr(PasswordHasher, "hash", counting_hash)
    monkeypatch.setattr(PasswordHasher, "verify", counting_verify)
    with factory() as session:
        authenticate(session, "nobody", "whatever password")  # may make the dummy hash once
        runs.clear()
        assert authenticate(session, "alice", "wrong password") is None
        known = list(runs)
        runs.clear()
        assert authenticate(session, "mallory", "wrong password") is None
        unknown = list(runs)
        runs.clear()
        assert authenticate(session, "alice", "correct horse battery") is not None
    engine.dispose()
    assert known == ["verify"]
    assert unknown == known, (unknown, known)
