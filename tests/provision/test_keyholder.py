"""The per-assignment key's keeper: a plain key file, or a key wrapped under a TPM NV index
(a software TPM here, Debian's swtpm) that a wipe undefines — a real crypto-erase."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kiosk.provision import keyholder
from kiosk.provision.keyholder import FileKey, KeyHolderError, TpmKey
from tests import swtpm

KEY = bytes(range(32))


@pytest.fixture
def tpm(tmp_path: Path) -> Iterator[swtpm.Swtpm]:
    if not swtpm.available():
        pytest.skip("needs swtpm and tpm2-tools (scripts/setup.sh)")
    t = swtpm.Swtpm(tmp_path / "tpm").start()
    yield t
    t.stop()


def test_without_a_tpm_the_key_is_a_file_and_a_wipe_shreds_it(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(keyholder.TCTI_VARIABLE, raising=False)
    monkeypatch.setattr(keyholder, "TPM_DEVICE", tmp_path / "no-tpm")
    holder = keyholder.for_unit(tmp_path / "assignment.key")
    assert isinstance(holder, FileKey) and holder.erases == ()
    assert holder.load() is None
    holder.store(KEY)
    assert (tmp_path / "assignment.key").read_bytes() == KEY == holder.load()
    holder.destroy()
    holder.destroy()  # a resumed wipe destroys again
    assert holder.load() is None and not (tmp_path / "assignment.key").exists()


def test_with_a_tpm_only_a_wrapped_key_is_on_the_disk(tpm: swtpm.Swtpm, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keyholder.TCTI_VARIABLE, tpm.tcti)
    holder = keyholder.for_unit(tmp_path / "assignment.key")
    assert isinstance(holder, TpmKey) and holder.erases == ("tpm-key-encryption-key",)
    holder.store(KEY)
    on_disk = (tmp_path / "assignment.key").read_bytes()
    assert KEY not in on_disk and len(on_disk) == 12 + 32 + 16  # nonce, wrapped key, tag
    assert keyholder.NV_INDEX.lower().replace("0x0", "0x") in tpm.nv_indices()
    assert holder.load() == KEY


def test_after_a_wipe_a_stale_copy_of_the_wrapped_key_can_never_be_opened(tpm: swtpm.Swtpm, tmp_path: Path) -> None:
    path = tmp_path / "assignment.key"
    holder = TpmKey(path, tpm.tcti)
    holder.store(KEY)
    kek = tpm.tools("tpm2_nvread", "-C", "o", "-s", "32", keyholder.NV_INDEX)
    assert kek.returncode == 0
    stale = path.read_bytes()  # what the flash may keep of the file after it is overwritten
    holder.destroy()
    assert not path.exists()
    assert tpm.nv_indices() == []
    path.write_bytes(stale)  # the stale copy found and put back
    assert holder.load() is None
    gone = tpm.tools("tpm2_nvread", "-C", "o", "-s", "32", keyholder.NV_INDEX)
    assert gone.returncode != 0 and "0x18B" in gone.stderr
    # and no key-encryption key made afresh opens it either
    with pytest.raises(InvalidTag):
        fresh = AESGCM.generate_key(bit_length=256)
        AESGCM(fresh).decrypt(stale[:12], stale[12:], keyholder.WRAP_CONTEXT)
    holder.destroy()  # a resumed wipe: nothing left to undefine, no error


def test_a_key_made_before_a_power_cut_is_made_afresh(tpm: swtpm.Swtpm, tmp_path: Path) -> None:
    holder = TpmKey(tmp_path / "assignment.key", tpm.tcti)
    holder.store(KEY)
    (tmp_path / "assignment.key").unlink()  # the cut came before the wrapped file was written
    other = bytes(32)
    holder.store(other)
    assert holder.load() == other


def test_a_tpm_that_fails_is_a_clear_error_and_loses_nothing(tpm: swtpm.Swtpm, tmp_path: Path) -> None:
    path = tmp_path / "assignment.key"
    holder = TpmKey(path, tpm.tcti)
    holder.store(KEY)
    wrapped = path.read_bytes()
    tpm.stop()
    with pytest.raises(KeyHolderError, match="tpm2_nvread 0x01800B15 failed"):
        holder.load()
    with pytest.raises(KeyHolderError, match="tpm2_nvundefine 0x01800B15 failed"):
        holder.destroy()
    assert path.read_bytes() == wrapped  # the wipe will try again; nothing was shredded
    tpm.start()
    assert holder.load() == KEY


def test_citizen_data_under_a_tpm_key(tpm: swtpm.Swtpm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kiosk.provision.state import StateDir, Vault
    monkeypatch.setenv(keyholder.TCTI_VARIABLE, tpm.tcti)
    state = StateDir(tmp_path / "state").create()
    Vault(state).put("assignment", {"name": "Karen Jensen"})
    assert Vault(state).get("assignment") == {"name": "Karen Jensen"}
    assert b"Karen" not in (state.citizen / "assignment.bin").read_bytes()
    state.assignment_key().destroy()
    assert Vault(state).get("assignment") is None


def test_the_tools_missing_means_a_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keyholder.TCTI_VARIABLE, "swtpm:path=/nowhere")
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    assert isinstance(keyholder.for_unit(tmp_path / "k"), FileKey)
