"""The master keys every in-process messaging of the integration tests runs with (MASTER_KEYS).

Fixed, so a database a test left behind still opens with them; tests of key rotation make their own.
"""

from __future__ import annotations

import base64
import json

MASTER_KEY_1 = base64.b64encode(bytes(range(32))).decode()
MASTER_KEYS = json.dumps({"current": 1, "keys": {"1": MASTER_KEY_1}})
