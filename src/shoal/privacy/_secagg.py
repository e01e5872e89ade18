"""Secure aggregation, SecAgg+-style (Bonawitz et al. 2017; Bell et al. 2020): the pure
protocol, one function per step, with no I/O.

Each client ``u`` (numbered ``1..n``):

1. **advertise**: two X25519 key pairs, ``c`` (to encrypt shares) and ``s`` (to agree
   mask seeds), derived from a 32-byte secret that never leaves its node.
2. **share**: a fresh self-mask seed ``b_u`` and its ``s`` private key are Shamir-split
   (threshold ``t``) among all clients; each share is encrypted (AES-GCM) to its
   recipient under ``HKDF(X25519(c_u, c_v))``.
3. **mask**: the input, fixed-point encoded in ``Z_{2**64}``, plus ``PRG(b_u)``, plus
   ``PRG(s_uv)`` for each ``v > u`` and minus it for each ``v < u``, where ``s_uv =
   HKDF(X25519(s_u, s_v))`` is the same for both.
4. **reveal**: once the server says who sent a masked input (``U3``), each surviving
   client decrypts the shares it holds and reveals, for ``v`` in ``U3``, its share of
   ``b_v``, and for ``v`` that shared but sent nothing, its share of ``s_v``; never both
   for the same ``v``.
5. **unmask** (server): the pairwise masks of ``U3`` cancel in the sum; it removes
   ``PRG(b_v)`` for ``v`` in ``U3`` and, for each dropped ``v``, the pairwise masks
   ``v`` shared with ``U3`` (from ``s_v``), then decodes.

Fixed point: ``encode(x) = round(x * 2**frac_bits) mod 2**64``; the sum of ``n`` inputs
is exact to ``n * 2**-(frac_bits + 1)`` and does not overflow while ``n * max|x| <
2**(63 - frac_bits)`` (with the default 24 fractional bits: 2**39, about 5.5e11).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shoal.privacy import _shamir

FRAC_BITS = 24
_RAW = serialization.Encoding.Raw
_PUB = serialization.PublicFormat.Raw


def _derive(secret: bytes, label: str) -> bytes:
    return hashlib.sha256(secret + b"\x00" + label.encode()).digest()


def _kdf(shared: bytes, info: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info.encode()).derive(shared)


def encode(x: np.ndarray, frac_bits: int = FRAC_BITS) -> np.ndarray:
    """Floats to fixed point in ``Z_{2**64}`` (two's complement)."""
    scaled = np.round(np.asarray(x, dtype=np.float64) * float(2**frac_bits))
    return scaled.astype(np.int64).view(np.uint64)


def decode(v: np.ndarray, frac_bits: int = FRAC_BITS) -> np.ndarray:
    """Fixed point in ``Z_{2**64}`` back to floats."""
    signed = np.asarray(v, dtype=np.uint64).view(np.int64)
    return np.asarray(signed.astype(np.float64) / float(2**frac_bits))


def prg(seed: bytes, size: int) -> np.ndarray:
    """``size`` pseudo-random elements of ``Z_{2**64}`` from a 32-byte seed (ChaCha20)."""
    stream = Cipher(algorithms.ChaCha20(seed, b"\x00" * 16), mode=None).encryptor()
    data = stream.update(b"\x00" * (8 * size))
    return np.array(np.frombuffer(data, dtype=np.uint64))


@dataclass(frozen=True)
class ClientKeys:
    """A client's key pairs for one round, derived from its node-held secret."""

    c_private: X25519PrivateKey
    s_private: X25519PrivateKey
    self_seed: bytes

    @staticmethod
    def derive(secret: bytes, round_label: str) -> ClientKeys:
        """The keys for round ``round_label`` (e.g. ``"swarm/3"``) from ``secret``."""
        return ClientKeys(
            X25519PrivateKey.from_private_bytes(_derive(secret, round_label + "/c")),
            X25519PrivateKey.from_private_bytes(_derive(secret, round_label + "/s")),
            _derive(secret, round_label + "/b"),
        )

    def public(self) -> dict[str, bytes]:
        """Step 1: what the client advertises."""
        return {
            "c": self.c_private.public_key().public_bytes(_RAW, _PUB),
            "s": self.s_private.public_key().public_bytes(_RAW, _PUB),
        }

    def s_private_bytes(self) -> bytes:
        """The mask key's private bytes (what is secret-shared)."""
        return self.s_private.private_bytes(
            _RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )


def _aead_key(private: X25519PrivateKey, public: bytes, label: str) -> bytes:
    return _kdf(private.exchange(X25519PublicKey.from_public_bytes(public)), label + "/enc")


def share(
    me: int,
    keys: ClientKeys,
    publics: Mapping[int, Mapping[str, bytes]],
    threshold: int,
    label: str,
) -> dict[int, bytes]:
    """Step 2: my shares of ``b_me`` and ``s_me``, encrypted to each other client."""
    ids = sorted(publics)
    b_shares = _shamir.split(keys.self_seed, ids, threshold)
    s_shares = _shamir.split(keys.s_private_bytes(), ids, threshold)
    out = {}
    for v in ids:
        if v == me:
            continue
        plain = b_shares[v].to_bytes(66, "big") + s_shares[v].to_bytes(66, "big")
        key = _aead_key(keys.c_private, publics[v]["c"], label)
        out[v] = AESGCM(key).encrypt(_nonce(me, v), plain, f"{label}/{me}/{v}".encode())
    # My own shares are kept in the clear: I reveal them myself (step 4).
    mine = b_shares[me].to_bytes(66, "big") + s_shares[me].to_bytes(66, "big")
    out[me] = mine
    return out


def _nonce(u: int, v: int) -> bytes:
    return u.to_bytes(6, "big") + v.to_bytes(6, "big")


def _pair_seed(private: X25519PrivateKey, public: bytes, label: str) -> bytes:
    return _kdf(private.exchange(X25519PublicKey.from_public_bytes(public)), label + "/mask")


def mask(
    me: int,
    keys: ClientKeys,
    x: np.ndarray,
    publics: Mapping[int, Mapping[str, bytes]],
    label: str,
    frac_bits: int = FRAC_BITS,
) -> np.ndarray:
    """Step 3: my input, encoded and masked; ``publics``: every client that shared (U2)."""
    y = encode(x, frac_bits)
    y = y + prg(keys.self_seed, y.size)
    y = y + pairwise_mask(me, keys, publics, label, y.size)  # uint64: mod 2**64
    return np.asarray(y, dtype=np.uint64)


def pairwise_mask(
    me: int,
    keys: ClientKeys,
    publics: Mapping[int, Mapping[str, bytes]],
    label: str,
    size: int,
) -> np.ndarray:
    """My pairwise mask: ``+PRG(s_uv)`` for each ``v > me``, ``-PRG(s_uv)`` for each
    ``v < me``, summed in ``Z_{2**64}``; ``publics``: every party (me included or not).

    The masks of all the parties in ``publics`` sum to zero, so a sum of masked inputs
    needs no unmasking; a party that leaves its own mask out (and adds it back at the
    end) is the only one that can read the sum. Used by :func:`mask` and by the steps
    dialect's secure sum over a chain.
    """
    out = np.zeros(size, dtype=np.uint64)
    for v, pub in publics.items():
        if v == me:
            continue
        p = prg(_pair_seed(keys.s_private, pub["s"], label), size)
        out = out + p if me < v else out - p
    return out


def reveal(
    me: int,
    keys: ClientKeys,
    publics: Mapping[int, Mapping[str, bytes]],
    received: Mapping[int, bytes],
    survivors: set[int],
    label: str,
) -> dict[str, dict[int, int]]:
    """Step 4: my shares of ``b_v`` for survivors and of ``s_v`` for the dropped.

    ``received``: sender -> the ciphertext it addressed to me (my own: in the clear).
    """
    out: dict[str, dict[int, int]] = {"b": {}, "s": {}}
    for v, blob in received.items():
        if v == me:
            plain = blob
        else:
            key = _aead_key(keys.c_private, publics[v]["c"], label)
            plain = AESGCM(key).decrypt(_nonce(v, me), blob, f"{label}/{v}/{me}".encode())
        b, s = int.from_bytes(plain[:66], "big"), int.from_bytes(plain[66:], "big")
        if v in survivors:
            out["b"][v] = b
        else:
            out["s"][v] = s
    return out


def unmask(
    masked_sum: np.ndarray,
    survivors: set[int],
    publics: Mapping[int, Mapping[str, bytes]],
    reveals: Mapping[int, Mapping[str, Mapping[int, int]]],
    threshold: int,
    label: str,
    frac_bits: int = FRAC_BITS,
) -> np.ndarray:
    """Step 5 (server): the sum of the inputs of the ``survivors`` (U3).

    ``masked_sum``: the sum (mod 2**64) of their masked inputs, which the server can
    accumulate one input at a time; ``publics``: every client that shared (U2);
    ``reveals``: client -> its step-4 answer.

    Raises
    ------
    ValueError
        When fewer than ``threshold`` clients revealed shares: the sum cannot be
        recovered (more than ``n - t`` clients dropped).
    """
    if len(reveals) < threshold:
        raise ValueError(
            f"only {len(reveals)} clients revealed shares; at least {threshold} are needed"
        )
    total = np.asarray(masked_sum, dtype=np.uint64)
    size = total.size
    cache: dict[tuple[int, ...], dict[int, int]] = {}

    def recover(shares: dict[int, int]) -> bytes:
        # The same t holders reveal for every client: their coefficients are computed
        # once, so unmasking n clients costs O(t^2 + n t), not O(n t^2).
        xs = tuple(sorted(shares))[:threshold]
        if xs not in cache and len(xs) == threshold:
            cache[xs] = _shamir.lagrange_at_zero(xs)
        return _shamir.combine(shares, threshold, coefficients=cache.get(xs))

    for u in sorted(survivors):  # remove each survivor's self mask
        shares = {w: r["b"][u] for w, r in reveals.items() if u in r["b"]}
        total = total - prg(recover(shares), size)
    for v in publics:  # dropped after sharing: remove their pairwise masks with survivors
        if v in survivors:
            continue
        shares = {w: r["s"][v] for w, r in reveals.items() if v in r["s"]}
        s_v = X25519PrivateKey.from_private_bytes(recover(shares))
        for u in sorted(survivors):
            p = prg(_pair_seed(s_v, publics[u]["s"], label), size)
            # u added +p if u < v, else -p: take it out.
            total = total - p if u < v else total + p
    return decode(total, frac_bits)
