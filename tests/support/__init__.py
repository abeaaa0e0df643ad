"""What several test modules share: small inputs built by the tests, tiny model flags, log readers.

Fixtures live in ``tests/conftest.py``; plain helpers live here (``from support.x import y``).
"""
