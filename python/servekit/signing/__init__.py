"""Signed artifacts in the OpenSSF model-signing format, with local elliptic-curve keys.

A signature is a Sigstore bundle (JSON) over the artifact's files, made and checked by the
``model_signing`` library (the ``sign`` extra), so the ``model_signing`` command line verifies
what servekit signs and the other way round. No network is used: keys are local PEM files.
"""

from servekit.signing.keys import generate_keys
from servekit.signing.sign import SignatureError, key_hint, sign_path, verify_path

__all__ = ["SignatureError", "generate_keys", "key_hint", "sign_path", "verify_path"]
