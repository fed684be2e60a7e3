"""Redis key names that keep one operation inside one Redis Cluster slot.

When a key holds a hash tag (the text between its first `{` and the next `}`), a Redis Cluster
places it by that tag alone. Every key here carries the thing it is scoped to as its tag: a room id
for a room's keys, a subject or a keyed hash of an address or email for a per-caller limit. So every
key one script or transaction touches shares a slot, while different rooms and callers spread over
the whole cluster. Never one tag for everything: that would pin the whole keyspace to one node.
On a single Redis the braces are just part of the name. Keys that took their tag with cluster
support have new names: an upgrade starts those limit windows and holds afresh, nothing more.

Scripts name every key they touch in KEYS and are called directly, never inside a pipeline: a
script object then loads its script itself when a node answers NOSCRIPT (a restarted node or a
promoted replica has an empty script cache), which redis-py does not do for cluster pipelines.
"""

from __future__ import annotations


def tagged(prefix: str, tag: str, *rest: str) -> str:
    """`prefix:{tag}:rest…`, e.g. `tagged("rooms:rolls", room_id, "hold", name)`.

    Tags are ids and hex hashes. A tag holding a `}` would only narrow what is hashed (still one slot
    per key name); an empty tag (`{}`) makes Redis hash the whole name instead.
    """
    return ":".join((f"{prefix}:{{{tag}}}", *rest))
