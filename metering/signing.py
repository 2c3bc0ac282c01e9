"""Standard Webhooks signing: `whsec_` secrets and `v1,` HMAC-SHA256 signatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Any

from metering.errors import BadRequest


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: Any) -> None:
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise BadRequest("webhook_secret: must be a whsec_ secret (whsec_ + base64 of 24 to 64 random bytes)")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("webhook_secret: the part after whsec_ is not base64") from None
    if not 24 <= len(key) <= 64:
        raise BadRequest("webhook_secret: must hold 24 to 64 bytes")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()
