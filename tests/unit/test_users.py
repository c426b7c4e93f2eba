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


def test_set_password_and_delete_user_end_every_session_of_the_user(tmp_path):
    """Issue 13 item 11: server-side sessions are revoked by a password change or removal."""
    from dicom_node.users import create_web_session, delete_user, session_user, set_password

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    factory = make_session_factory(engine)
    with factory.begin() as session:
        ada = create_user(session, "ada", "correct horse battery", "admin").id
        bob = create_user(session, "bob", "correct horse battery", "viewer").id
        ada_sids = [create_web_session(session, ada) for _ in range(2)]
        bob_sid = create_web_session(session, bob)
    with factory.begin() as session:
        assert all(session_user(session, sid, 1800, 43200) for sid in ada_sids)
        set_password(session, "ada", "another good password")
    with factory.begin() as session:
        assert [session_user(session, sid, 1800, 43200) for sid in ada_sids] == [None, None]
        assert session_user(session, bob_sid, 1800, 43200).username == "bob"
        delete_user(session, "bob")
    with factory.begin() as session:
        assert session_user(session, bob_sid, 1800, 43200) is None
    engine.dispose()


def test_login_throttle_locks_a_name_after_the_limit_and_unlock_lifts_it(tmp_path):
    """Issue 13 item 10: failures within the window lock the name; unlock clears it."""
    from datetime import timedelta

    from dicom_node import login_throttle as lt
    from dicom_node.db.models import utcnow

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    factory = make_session_factory(engine)
    policy = lt.ThrottlePolicy(max_failures=3, max_failures_per_address=100, window_s=60,
                               lockout_s=300)  # fmt: skip
    t0 = utcnow()
    with factory.begin() as session:
        # two old failures fall out of the window and do not count
        for k in range(2):
            assert lt.record_failure(session, "ada", "10.0.0.1", policy, t0 - timedelta(
                seconds=120 + k)) is None  # fmt: skip
        assert lt.record_failure(session, "ada", "10.0.0.1", policy, t0) is None
        assert lt.record_failure(session, "ada", "10.0.0.1", policy, t0) is None
        until = lt.record_failure(session, "ada", "10.0.0.1", policy, t0)
        assert until == t0 + timedelta(seconds=300)
    with factory.begin() as session:
        assert lt.locked_until(session, "ada", "10.0.0.2", t0) == until
        assert lt.locked_until(session, "bob", "10.0.0.1", t0) is None
        assert lt.locked_until(session, "ada", "10.0.0.2", until + timedelta(seconds=1)) is None
    with factory.begin() as session:
        for _ in range(3):
            lt.record_failure(session, "ada", "10.0.0.1", policy, t0)
        assert lt.locked_until(session, "ada", "10.0.0.2", t0) is not None
        assert lt.unlock(session, lt.USER, "ada", by="test") is True
        assert lt.locked_until(session, "ada", "10.0.0.2", t0) is None
        assert lt.unlock(session, lt.USER, "ada", by="test") is False
    engine.dispose()
