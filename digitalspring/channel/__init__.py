"""
Secure channels: the Noise Protocol Framework over any byte stream.
"""

from ._noise import (
    PATTERNS,
    CipherState,
    HandshakePattern,
    HandshakeState,
    NoiseProtocol,
    SymmetricState,
)
from ._primitives import (
    DecryptError,
    HandshakeConfigError,
    HandshakeOutOfOrder,
    HashFunction,
    InvalidMessage,
    InvalidPublicKey,
    KeyPair,
    NoiseError,
    NonceExhausted,
    UnsupportedProtocol,
)

__all__ = [
    "PATTERNS",
    "CipherState",
    "DecryptError",
    "HandshakeConfigError",
    "HandshakeOutOfOrder",
    "HandshakePattern",
    "HandshakeState",
    "HashFunction",
    "InvalidMessage",
    "InvalidPublicKey",
    "KeyPair",
    "NoiseError",
    "NoiseProtocol",
    "NonceExhausted",
    "SymmetricState",
    "UnsupportedProtocol",
]
