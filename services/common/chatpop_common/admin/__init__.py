"""The operator's admin CLI: `python -m chatpop_common.admin <group> <command>`.

    room inspect ROOM                 the room's Postgres log against its Redis hot cache
    room rebuild-cache ROOM           replace the hot cache with the newest entries from Postgres
    room erase ROOM --yes             crypto-shred a closed room (finishes an interrupted erase)
    retention run [--room ROOM] [--apply]
                                      what retention deletes now; a dry run unless --apply
    keys versions [--room ROOM]       master and data key versions in use
    keys rotate-master                re-wrap data keys with the current master key version
    keys rotate-rooms [--room ROOM]…  a new data key version for new messages
    keys reencrypt [--room ROOM]… [--limit N] [--until-done]
                                      move stored content to the newest data key
    admins grant EMAIL | revoke EMAIL | list
    audit [--kind K] [--actor A] [--target T] [--room ROOM] [--since T] [--until T] [--before ID]
          [--limit N]                 audit events, newest first

ROOM is a room's id or its code. The CLI talks to the services over gRPC with a `cli` service token
it gets from identity, proving itself with SERVICE_TOKEN_SECRET (the secret the services share);
IDENTITY_ADDR, ROOMS_ADDR and MESSAGING_ADDR say where they are (defaults: `make run`'s ports).
Output is JSON: one object, or one object a line for lists. Exit status: 0 done, 1 a call failed
(the error, with its gRPC status and code, as JSON on stderr), 2 a usage problem.
"""
