"""
Tests for the key file and the identity store of a data directory.
"""

import json
import os
import stat

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from digitalspring.identity import (
    FAST_KDF,
    BadPassphrase,
    CorruptKeyFile,
    Identity,
    KdfParams,
    KeyFile,
    KeyFileError,
    KeyFileExists,
    NoKeyFile,
    NotAKeyFile,
    PassphraseRequired,
    UnsupportedKeyFile,
    _keyfile,
    create_identity,
    encode_key_file,
    export_identity,
    import_identity,
    key_file_path,
    load_identity,
    load_or_create_identity,
    read_key_file,
    write_key_file,
)
from digitalspring.identity._keyfile import (
    DEFAULT_KDF,
    MAGIC,
    MAX_MEMLIMIT,
    MAX_OPSLIMIT,
    _checksum,
)


class KeyFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = FilePath(self.mktemp())
        self.path.makedirs()
        self.key = self.path.child("identity.key")
        self.identity = Identity.generate()

    def test_encrypted_round_trip(self) -> None:
        """
        An encrypted key file opens with its passphrase to the same identity,
        and its peer ID is readable without the passphrase.
        """
        write_key_file(self.key, self.identity, "correct horse", FAST_KDF)
        keyfile = read_key_file(self.key)
        self.assertTrue(keyfile.encrypted)
        self.assertEqual(keyfile.peer_id, self.identity.peer_id)
        self.assertEqual(keyfile.open("correct horse").seed, self.identity.seed)
        self.assertNotIn(self.identity.seed.hex().encode(), self.key.getContent())

    def test_mode_0600(self) -> None:
        """
        The key file is readable and writable by its owner only, and no
        temporary file is left beside it.
        """
        write_key_file(self.key, self.identity, "pw", FAST_KDF)
        self.assertEqual(stat.S_IMODE(os.stat(self.key.path).st_mode), 0o600)
        self.assertEqual(self.path.listdir(), ["identity.key"])

    def test_bad_passphrase(self) -> None:
        """
        A wrong passphrase raises BadPassphrase, not a corruption error.
        """
        write_key_file(self.key, self.identity, "right", FAST_KDF)
        self.assertRaises(BadPassphrase, read_key_file(self.key).open, "wrong")

    def test_passphrase_required(self) -> None:
        """
        Opening an encrypted key file without a passphrase says one is needed.
        """
        write_key_file(self.key, self.identity, "pw", FAST_KDF)
        self.assertRaises(PassphraseRequired, read_key_file(self.key).open, None)

    def test_unicode_passphrase_normalised(self) -> None:
        """
        A passphrase typed in another Unicode normal form opens the file.
        """
        write_key_file(self.key, self.identity, "caf\u00e9", FAST_KDF)
        self.assertEqual(read_key_file(self.key).open("cafe\u0301").peer_id, self.identity.peer_id)

    def test_empty_passphrase_refused(self) -> None:
        """
        An empty passphrase is refused rather than silently used.
        """
        self.assertRaises(KeyFileError, write_key_file, self.key, self.identity, "", FAST_KDF)
        self.assertFalse(self.key.exists())

    def test_unencrypted(self) -> None:
        """
        A key file written without a passphrase opens without one.
        """
        write_key_file(self.key, self.identity, None)
        keyfile = read_key_file(self.key)
        self.assertFalse(keyfile.encrypted)
        self.assertEqual(keyfile.open().peer_id, self.identity.peer_id)

    def test_no_overwrite(self) -> None:
        """
        An existing key file is not replaced unless asked, and stays intact.
        """
        write_key_file(self.key, self.identity, None)
        before = self.key.getContent()
        self.assertRaises(KeyFileExists, write_key_file, self.key, Identity.generate(), None)
        self.assertEqual(self.key.getContent(), before)
        write_key_file(self.key, Identity.generate(), None, replace=True)
        self.assertNotEqual(self.key.getContent(), before)

    def test_missing(self) -> None:
        """
        A missing key file raises NoKeyFile, which tells how to make one.
        """
        e = self.assertRaises(NoKeyFile, read_key_file, self.key)
        self.assertIn("dspring init", str(e))

    def test_truncated(self) -> None:
        """
        Every truncation of a key file is reported as damaged, never as a
        wrong passphrase or an unexpected exception.
        """
        data = encode_key_file(self.identity, "pw", FAST_KDF)
        for n in range(1, len(data) - 1):
            self.assertRaises(CorruptKeyFile, KeyFile.parse, data[:n])

    def test_flipped_bits(self) -> None:
        """
        A flipped bit anywhere in the file is caught as damage (or, where it
        lands in the magic line or the version, as a foreign or unsupported
        file), never taken for a wrong passphrase or ignored.
        """
        data = encode_key_file(self.identity, "pw", FAST_KDF)
        for i in range(0, len(data), 7):
            damaged = bytearray(data)
            damaged[i] ^= 0x04
            try:
                KeyFile.parse(bytes(damaged)).open("pw")
            except (CorruptKeyFile, NotAKeyFile, UnsupportedKeyFile):
                continue
            except BadPassphrase:
                self.fail(f"damage at byte {i} was taken for a wrong passphrase")
            self.fail(f"damage at byte {i} went unnoticed")

    def test_foreign(self) -> None:
        """
        Files that are not key files are called so.
        """
        for data in (b"", b"hello", b"\x00\x01\x02" * 100, b'{"a": 1}', b"x" * 100_000):
            self.assertRaises(NotAKeyFile, KeyFile.parse, data)

    def test_newer_version(self) -> None:
        """
        A key file from a newer version is refused as unsupported.
        """
        data = encode_key_file(self.identity, None).replace(b'"version": 1', b'"version": 2')
        self.assertRaises(UnsupportedKeyFile, KeyFile.parse, data)

    def _crafted(self, opslimit: object, memlimit: object) -> bytes:
        """
        A key file of ours with its KDF limits changed and its checksum made
        to match, as anyone can (the checksum is not keyed).
        """
        fields = json.loads(encode_key_file(self.identity, "pw", FAST_KDF)[len(MAGIC) :])
        del fields["checksum"]
        fields["kdf"]["opslimit"] = opslimit
        fields["kdf"]["memlimit"] = memlimit
        fields["checksum"] = _checksum(fields)
        return MAGIC + json.dumps(fields).encode()

    def _never_derive(self) -> list[KdfParams]:
        """
        Replace argon2id with a stand-in that records what it was asked and
        derives a wrong key, so a test can tell whether the KDF would have
        run, and at what cost, without paying for it.
        """
        asked: list[KdfParams] = []

        def derive(passphrase: bytes, salt: bytes, params: KdfParams) -> bytes:
            asked.append(params)
            return bytes(32)

        self.patch(_keyfile, "_derive", derive)
        return asked

    def test_absurd_kdf_limits(self) -> None:
        """
        A key file asking for an absurd KDF cost, or for limits that are not
        numbers, is refused before any work.
        """
        crafted = [
            self._crafted(opslimit, memlimit)
            for opslimit, memlimit in [
                (FAST_KDF.opslimit, 2**60),
                (0, FAST_KDF.memlimit),
                ("3", FAST_KDF.memlimit),
                (FAST_KDF.opslimit, None),
                (1.5, FAST_KDF.memlimit),
            ]
        ]
        asked = self._never_derive()
        for data in crafted:
            self.assertRaises(UnsupportedKeyFile, KeyFile.parse(data).open, "pw")
        self.assertEqual(asked, [])

    def test_kdf_cost_above_what_we_write(self) -> None:
        """
        The attack of issue 8: a crafted file handed to ``dspring import``
        asks for opslimit 64 and 4 GiB, which argon2id allows and which used
        to be accepted, costing minutes and 4 GiB before the passphrase was
        found wrong.  Anything above what Digital Spring writes
        (``DEFAULT_KDF``) is now refused with a clear error before argon2id
        runs, and nothing is imported; the cost we write is still accepted.
        """
        default = DEFAULT_KDF
        self.assertEqual((MAX_OPSLIMIT, MAX_MEMLIMIT), (default.opslimit, default.memlimit))
        backup = self.path.child("crafted.key")
        backup.setContent(self._crafted(64, 4 * 1024**3))
        above = [
            self._crafted(default.opslimit + 1, default.memlimit),
            self._crafted(default.opslimit, default.memlimit + 1024),
        ]
        at_the_bound = self._crafted(default.opslimit, default.memlimit)
        asked = self._never_derive()
        data_dir = self.path.child("data")
        e = self.assertRaises(UnsupportedKeyFile, import_identity, data_dir, backup, "pw", None)
        self.assertIn("opslimit=64", str(e))
        self.assertIn("not written by Digital Spring", str(e))
        self.assertFalse(key_file_path(data_dir).exists())
        for data in above:
            self.assertRaises(UnsupportedKeyFile, KeyFile.parse(data).open, "pw")
        self.assertEqual(asked, [])
        self.assertRaises(BadPassphrase, KeyFile.parse(at_the_bound).open, "pw")
        self.assertEqual(asked, [default])

    def test_never_writes_what_it_would_not_read(self) -> None:
        """
        A key file is not written with a KDF cost above what is read back.
        """
        costly = KdfParams(MAX_OPSLIMIT + 1, MAX_MEMLIMIT)
        self.assertRaises(UnsupportedKeyFile, encode_key_file, self.identity, "pw", costly)
        self.assertRaises(
            UnsupportedKeyFile, write_key_file, self.key, self.identity, "pw", costly
        )
        self.assertFalse(self.key.exists())

    @settings(max_examples=200)
    @given(st.binary(max_size=400))
    def test_fuzz(self, data: bytes) -> None:
        """
        Arbitrary bytes never raise anything but a KeyFileError.
        """
        try:
            KeyFile.parse(data).open("pw")
        except KeyFileError:
            pass


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = FilePath(self.mktemp())

    def test_create_and_load(self) -> None:
        """
        A created identity loads again from the data directory, which is
        private to its owner.
        """
        identity = create_identity(self.data_dir, "pw", FAST_KDF)
        self.assertEqual(load_identity(self.data_dir, "pw").peer_id, identity.peer_id)
        self.assertEqual(stat.S_IMODE(os.stat(self.data_dir.path).st_mode), 0o700)

    def test_load_or_create_needs_a_choice(self) -> None:
        """
        With no identity, no passphrase and no explicit consent to an
        unencrypted file, nothing is created and the error says what to pass.
        """
        e = self.assertRaises(
            PassphraseRequired, load_or_create_identity, self.data_dir, None, False, FAST_KDF
        )
        self.assertIn("--no-passphrase", str(e))
        self.assertFalse(key_file_path(self.data_dir).exists())

    def test_load_or_create(self) -> None:
        """
        The first call creates, the second loads the same identity.
        """
        first, created = load_or_create_identity(self.data_dir, None, True)
        self.assertTrue(created)
        second, created = load_or_create_identity(self.data_dir, None, True)
        self.assertFalse(created)
        self.assertEqual(first.peer_id, second.peer_id)

    def test_export_import(self) -> None:
        """
        A backup restores the same peer ID in another data directory, under a
        new passphrase there.
        """
        identity = create_identity(self.data_dir, "old", FAST_KDF)
        backup = FilePath(self.mktemp())
        export_identity(self.data_dir, "old", backup, "backup-pw", FAST_KDF)
        other = FilePath(self.mktemp())
        restored = import_identity(other, backup, "backup-pw", "new", FAST_KDF)
        self.assertEqual(restored.peer_id, identity.peer_id)
        self.assertEqual(load_identity(other, "new").peer_id, identity.peer_id)

    def test_import_keeps_other_identity(self) -> None:
        """
        Importing over another identity is refused without replace, and the
        existing key file is left as it was.
        """
        create_identity(self.data_dir, None)
        before = key_file_path(self.data_dir).getContent()
        backup = FilePath(self.mktemp())
        write_key_file(backup, Identity.generate(), "b", FAST_KDF)
        self.assertRaises(KeyFileExists, import_identity, self.data_dir, backup, "b", None)
        self.assertEqual(key_file_path(self.data_dir).getContent(), before)
        import_identity(self.data_dir, backup, "b", None, replace=True)
        self.assertNotEqual(key_file_path(self.data_dir).getContent(), before)

    def test_import_wrong_backup_passphrase(self) -> None:
        """
        A wrong backup passphrase writes nothing.
        """
        backup = FilePath(self.mktemp())
        write_key_file(backup, Identity.generate(), "b", FAST_KDF)
        self.assertRaises(BadPassphrase, import_identity, self.data_dir, backup, "x", None)
        self.assertFalse(key_file_path(self.data_dir).exists())
