"""Version 1 routers, mounted under /api/v1."""
