"""Secure aggregation, SecAgg+ (Bonawitz et al. 2017; Bell et al. 2020): the pure
protocol, one function per step, with no I/O.

Each client ``u`` (numbered ``1..n``) has ``k`` neighbours on a :class:`Graph` that every
party derives from a public seed (:func:`graph_seed`: the round label and every advertised
public key); with ``k = n - 1`` it is the complete graph of Bonawitz et al.

1. **advertise**: two X25519 key pairs, ``c`` (to encrypt shares) and ``s`` (to agree
   mask seeds), derived from a 32-byte secret that never leaves its node.
2. **share**: a fresh self-mask seed ``b_u`` and its ``s`` private key are Shamir-split
   (threshold ``t``) among its share group, ``u`` and its neighbours; each share is
   encrypted (AES-GCM) to its recipient under ``HKDF(X25519(c_u, c_v))``.
3. **mask**: the input, fixed-point encoded in ``Z_{2**64}``, plus ``PRG(b_u)``, plus
   ``PRG(s_uv)`` for each neighbour ``v > u`` and minus it for each neighbour ``v < u``,
   where ``s_uv = HKDF(X25519(s_u, s_v))`` is the same for both.
4. **reveal**: once the server says who sent a masked input (``U3``), each surviving
   client checks that ``U3`` is connected on the graph (else the server could unmask the
   sum of a part of it), decrypts the shares it holds and reveals, for ``v`` in ``U3``,
   its share of ``b_v``, and for ``v`` that shared but sent nothing, its share of ``s_v``;
   never both for the same ``v``.
5. **unmask** (server): the pairwise masks of ``U3`` cancel in the sum; it removes
   ``PRG(b_v)`` for ``v`` in ``U3`` and, for each dropped ``v``, the pairwise masks
   ``v`` shared with its neighbours in ``U3`` (from ``s_v``), then decodes. A secret with
   fewer than ``t`` revealed shares fails the round with a ``ValueError``.

Fixed point: ``encode(x) = round(x * 2**frac_bits) mod 2**64``; the sum of ``n`` inputs
is exact to ``n * 2**-(frac_bits + 1)`` and does not overflow while ``n * max|x| <
2**(63 - frac_bits)`` (with the default 24 fractional bits: 2**39, about 5.5e11).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

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


# ------------------------------------------------------------------------ the graph
#: The assumptions behind :func:`default_degree` (docs/privacy.md, "Sparse graph").
CORRUPT = 0.05  # fraction of clients colluding with the server
DROPOUT = 0.05  # fraction of clients dropping out in a round
SIGMA = 40  # security: a failure probability of at most 2**-SIGMA
ETA = 20  # correctness: a failed round with probability at most 2**-ETA


def _tail(k: int, p: float, m: int) -> float:
    """P(Binomial(k, p) >= m)."""
    return math.fsum(math.comb(k, i) * p**i * (1 - p) ** (k - i) for i in range(max(m, 0), k + 1))


def group_threshold(setting: float, size: int) -> int:
    """Shares needed to recover a secret shared among ``size`` holders: ``setting``
    itself when it is an int >= 1, else ``ceil(setting * size)``; within ``[1, size]``."""
    t = int(setting) if setting >= 1 else math.ceil(setting * size)
    return max(1, min(t, size))


def default_degree(n: int, threshold: float = 2 / 3) -> int:
    """The number of neighbours each of ``n`` clients gets by default: the smallest even
    ``k`` for which, with a fraction :data:`CORRUPT` of the clients colluding with the
    server and :data:`DROPOUT` dropping out (neither chosen knowing the graph), union
    bounds give

    - some client has ``t`` colluding neighbours (who could rebuild its keys):
      ``n * P(Bin(k, CORRUPT) >= t) <= 2**-SIGMA``;
    - the honest survivors' graph falls apart (the server could unmask a part's sum):
      ``(n * (CORRUPT + DROPOUT)**(k/2))**2 <= 2**-SIGMA`` (the ring lattice needs two
      runs of ``k/2`` missing clients to disconnect);
    - some client's secret has fewer than ``t`` surviving holders (the round fails):
      ``n * P(Bin(k, DROPOUT) > k - t) <= 2**-ETA``;

    where ``t = ceil(threshold * (k + 1))``. ``n - 1`` (the complete graph) when no
    smaller ``k`` does, or when ``threshold`` is an absolute number of shares. 42 at
    100 clients, 48 at 1000, 54 at 10,000: O(log n).
    """
    if n <= 2 or threshold >= 1:
        return max(n - 1, 0)
    for k in range(2, n - 1, 2):
        t = group_threshold(threshold, k + 1)
        if (
            n * _tail(k, CORRUPT, t) <= 2.0**-SIGMA
            and (n * (CORRUPT + DROPOUT) ** (k // 2)) ** 2 <= 2.0**-SIGMA
            and n * _tail(k, DROPOUT, k - t + 1) <= 2.0**-ETA
        ):
            return k
    return n - 1


def graph_seed(label: str, publics: Mapping[int, Mapping[str, bytes]]) -> bytes:
    """The round's public graph seed: the label and every advertised key, so that no
    one knows the graph before every client has advertised."""
    h = hashlib.sha256(label.encode() + b"\x00")
    for u in sorted(publics):
        h.update(u.to_bytes(8, "big") + publics[u]["c"] + publics[u]["s"])
    return h.digest()


@dataclass(frozen=True)
class Graph:
    """Who masks against and shares with whom: a Harary graph ``H(n, k)`` (each client
    joined to the ``k/2`` nearest on either side of a ring) over the clients in an order
    drawn from a public seed, as in Bell et al. 2020; the complete graph when ``k >= n -
    1``. Every party builds the same one from the same seed."""

    ids: tuple[int, ...]
    degree: int
    order: tuple[int, ...] = field(repr=False)
    _position: dict[int, int] = field(repr=False, compare=False)

    @staticmethod
    def build(ids: Iterable[int], degree: int, seed: bytes) -> Graph:
        """``degree`` neighbours per client (rounded up to even) among ``ids``."""
        ordered = tuple(sorted(set(ids)))
        n = len(ordered)
        k = min(degree + (degree % 2), max(n - 1, 0))
        if k < 0:
            raise ValueError(f"the degree must be >= 0, not {degree}")
        order = tuple(
            sorted(ordered, key=lambda u: hashlib.sha256(seed + u.to_bytes(8, "big")).digest())
        )
        return Graph(ordered, k, order, {u: i for i, u in enumerate(order)})

    @property
    def complete(self) -> bool:
        """Every client is every other's neighbour (plain SecAgg)."""
        return self.degree >= len(self.ids) - 1

    @property
    def group_size(self) -> int:
        """Holders of each client's shares: itself and its neighbours."""
        return self.degree + 1

    def neighbours(self, u: int) -> frozenset[int]:
        """``u``'s neighbours (not ``u`` itself)."""
        if self.complete:
            return frozenset(self.ids) - {u}
        p, n, h = self._position[u], len(self.order), self.degree // 2
        return frozenset(self.order[(p + o) % n] for o in range(-h, h + 1) if o)

    def components(self, nodes: Collection[int]) -> list[set[int]]:
        """The connected components of the subgraph on ``nodes``, in O(n): on the ring
        lattice two of them are joined iff no run of ``k/2`` or more missing clients lies
        between them on one side of the ring or the other."""
        present = set(nodes)
        if not present or self.complete:
            return [present] if present else []
        n, h = len(self.order), self.degree // 2
        at = sorted(self._position[u] for u in present)
        parts: list[set[int]] = [{self.order[at[0]]}]
        for prev, cur in itertools.pairwise(at):
            if cur - prev > h:  # h or more missing in between: a cut
                parts.append(set())
            parts[-1].add(self.order[cur])
        if len(parts) > 1 and at[0] + n - at[-1] <= h:  # the ring closes: join the ends
            parts[0] |= parts.pop()
        return parts

    def check_connected(self, survivors: Collection[int]) -> None:
        """Raise ``ValueError`` when ``survivors`` fall apart on the graph: unmasking
        would then give the server the sum of each part, not only the total."""
        parts = self.components(survivors)
        if len(parts) > 1:
            sizes = sorted((len(p) for p in parts), reverse=True)
            raise ValueError(
                f"the {len(survivors)} clients that sent a masked input are not connected "
                f"on the round's graph (parts of {sizes} clients): unmasking would reveal "
                "the sum of each part, so no shares are revealed"
            )


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
    neighbours: Collection[int] | None = None,
) -> dict[int, bytes]:
    """Step 2: my shares of ``b_me`` and ``s_me``, encrypted to each neighbour.

    ``neighbours``: mine on the round's :class:`Graph` (``None``: every client in
    ``publics``, the complete graph); the shares go to them and to me.
    """
    ids = sorted(v for v in publics if v == me or neighbours is None or v in neighbours)
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
    neighbours: Collection[int] | None = None,
) -> np.ndarray:
    """Step 3: my input, encoded and masked; ``publics``: every client that shared (U2);
    ``neighbours``: mine (``None``: the complete graph), the only ones I mask against."""
    y = encode(x, frac_bits)
    y = y + prg(keys.self_seed, y.size)
    y = y + pairwise_mask(me, keys, publics, label, y.size, neighbours)  # mod 2**64
    return np.asarray(y, dtype=np.uint64)


def pairwise_mask(
    me: int,
    keys: ClientKeys,
    publics: Mapping[int, Mapping[str, bytes]],
    label: str,
    size: int,
    neighbours: Collection[int] | None = None,
) -> np.ndarray:
    """My pairwise mask: ``+PRG(s_uv)`` for each ``v > me``, ``-PRG(s_uv)`` for each
    ``v < me``, summed in ``Z_{2**64}``; ``publics``: every party (me included or not);
    ``neighbours``: the only ones I mask against (``None``: all of ``publics``).

    The masks of all the parties in ``publics`` sum to zero, so a sum of masked inputs
    needs no unmasking; a party that leaves its own mask out (and adds it back at the
    end) is the only one that can read the sum. Used by :func:`mask` and by the steps
    dialect's secure sum over a chain.
    """
    out = np.zeros(size, dtype=np.uint64)
    for v, pub in publics.items():
        if v == me or (neighbours is not None and v not in neighbours):
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
    graph: Graph | None = None,
) -> dict[str, dict[int, int]]:
    """Step 4: my shares of ``b_v`` for survivors and of ``s_v`` for the dropped.

    ``received``: sender -> the ciphertext it addressed to me (my own: in the clear);
    ``graph``: the round's graph, on which the survivors must be connected.

    Raises
    ------
    ValueError
        When the survivors are not connected on ``graph`` (nothing is revealed).
    """
    if graph is not None:
        graph.check_connected(survivors)
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
    graph: Graph | None = None,
) -> np.ndarray:
    """Step 5 (server): the sum of the inputs of the ``survivors`` (U3).

    ``masked_sum``: the sum (mod 2**64) of their masked inputs, which the server can
    accumulate one input at a time; ``publics``: every client that shared (U2);
    ``reveals``: client -> its step-4 answer; ``graph``: the round's graph (``None``:
    the complete graph).

    Raises
    ------
    ValueError
        When a secret it needs has fewer than ``threshold`` revealed shares (too many of
        its holders dropped), or the survivors are not connected on ``graph``: the sum
        cannot be recovered, and no partial or wrong sum is returned.
    """
    if len(reveals) < threshold:
        raise ValueError(
            f"only {len(reveals)} clients revealed shares; at least {threshold} are needed"
        )
    if graph is not None:
        graph.check_connected(survivors)
    total = np.asarray(masked_sum, dtype=np.uint64)
    size = total.size
    cache: dict[tuple[int, ...], dict[int, int]] = {}

    # Every secret needed, with the shares revealed for it; all are checked first.
    held: dict[str, dict[int, dict[int, int]]] = {"b": {}, "s": {}}
    for w, r in reveals.items():
        for kind in ("b", "s"):
            for u, share_ in r[kind].items():
                held[kind].setdefault(u, {})[w] = share_
    need: list[tuple[str, int, dict[int, int]]] = [
        ("s", v, held["s"].get(v, {})) for v in sorted(publics) if v not in survivors
    ] + [("b", u, held["b"].get(u, {})) for u in sorted(survivors)]
    short = [
        f"{'client' if kind == 'b' else 'dropped client'} {u}'s "
        f"{'self-mask seed' if kind == 'b' else 'mask key'} ({len(shares)} shares)"
        for kind, u, shares in need
        if len(shares) < threshold
    ]
    if short:
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        raise ValueError(
            f"cannot unmask the sum: too many share holders dropped for {', '.join(short[:5])}"
            f"{more}; each needs at least {threshold} shares"
        )

    def recover(shares: dict[int, int]) -> bytes:
        # On the complete graph the same t holders reveal for every client: their
        # coefficients are computed once, so unmasking n clients costs O(t^2 + n t).
        xs = tuple(sorted(shares))[:threshold]
        if xs not in cache:
            cache[xs] = _shamir.lagrange_at_zero(xs)
        return _shamir.combine(shares, threshold, coefficients=cache[xs])

    for kind, u, shares in need:
        if kind == "b":  # remove each survivor's self mask
            total = total - prg(recover(shares), size)
            continue
        # u dropped after sharing: remove its pairwise masks with surviving neighbours.
        s_u = X25519PrivateKey.from_private_bytes(recover(shares))
        near = survivors if graph is None else survivors & graph.neighbours(u)
        for w in sorted(near):
            p = prg(_pair_seed(s_u, publics[w]["s"], label), size)
            # w added +p if w < u, else -p: take it out.
            total = total - p if w < u else total + p
    return decode(total, frac_bits)
