"""Batched CRT decryption on a thread pool (gmpy2 releases the GIL in powmod)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import gmpy2

from protocol.paillier import PrivateKey


def _decrypt_slice(key: PrivateKey, ciphertexts: list) -> list:
    gmpy2.get_context().allow_release_gil = True
    return [key.raw_decrypt(c) for c in ciphertexts]


class Decryptor:
    def __init__(self, key: PrivateKey, threads: int):
        self.key = key
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decrypt")

    def validate(self, ciphertexts: list) -> None:
        """Refuse malformed ciphertexts, naming the first one."""
        for i, c in enumerate(ciphertexts):
            self.key.public.check_ciphertext(c, f"ciphertext {i}")

    def decrypt(self, ciphertexts: list) -> list:
        if len(ciphertexts) < 2 * self.threads:
            return _decrypt_slice(self.key, ciphertexts)
        step = -(-len(ciphertexts) // self.threads)
        parts = [ciphertexts[k : k + step] for k in range(0, len(ciphertexts), step)]
        return [m for part in self._pool.map(lambda s: _decrypt_slice(self.key, s), parts) for m in part]

    def close(self) -> None:
        self._pool.shutdown()
