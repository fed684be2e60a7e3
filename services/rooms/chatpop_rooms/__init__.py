"""The rooms service: rooms, their settings and their participants (gRPC `chatpop.rooms.v1`)."""
