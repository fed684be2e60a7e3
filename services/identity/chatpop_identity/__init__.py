"""The identity service: anonymous sessions, accounts, and the keys that sign every token."""
