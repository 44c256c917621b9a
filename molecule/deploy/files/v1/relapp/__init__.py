"""Release test app (molecule/deploy): v1 and v2 differ in VERSION, in slow()'s result and in one file."""
