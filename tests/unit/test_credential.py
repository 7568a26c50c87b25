"""The home's local credential file and the proof a server gives (runyard.credential)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from runyard import credential
from runyard.errors import ConfigError


def test_the_file_is_written_for_its_owner_alone_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = credential.write_local(tmp_path, "ry_abcd1234_secret")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credential.read_local(tmp_path) == "ry_abcd1234_secret"
    assert [p.name for p in tmp_path.iterdir()] == [credential.LOCAL_TOKEN_NAME]  # no temporary left


def test_a_file_others_may_read_or_a_symlink_is_refused(tmp_path: Path) -> None:
    assert credential.read_local(tmp_path) is None
    path = credential.write_local(tmp_path, "ry_abcd1234_secret")
    path.chmod(0o640)
    with pytest.raises(ConfigError, match=r"other users may read it \(mode 0640\).*chmod 600"):
        credential.read_local(tmp_path)
    usable, detail = credential.describe(tmp_path)
    assert not usable and "mode 0640" in detail
    path.unlink()
    (tmp_path / "elsewhere").write_text("ry_abcd1234_secret\n")
    (tmp_path / "elsewhere").chmod(0o600)
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="cannot read the local credential"):
        credential.read_local(tmp_path)


def test_the_proof_names_the_host_the_client_addressed() -> None:
    token = "ry_abcd1234_secret"
    stored = hashlib.sha256(token.encode()).hexdigest()
    assert credential.host_of("http://LocalHost:8765/") == "localhost:8765"
    assert credential.host_of("https://yard.example:443") == "yard.example"
    assert credential.host_of("http://[::1]:80") == "[::1]"
    answer = credential.proof(stored, "n" * 16, "127.0.0.1:8765")
    assert answer == credential.expected_proof(token, "n" * 16, "http://127.0.0.1:8765")
    assert answer != credential.expected_proof(token, "n" * 16, "http://127.0.0.1:9999")  # a relay's address
    assert answer != credential.expected_proof("ry_abcd1234_other", "n" * 16, "http://127.0.0.1:8765")
    assert credential.prefix_of(token) == "abcd1234" and credential.prefix_of("not-a-token") is None
