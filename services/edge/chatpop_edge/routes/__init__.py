"""REST v1 routers."""
