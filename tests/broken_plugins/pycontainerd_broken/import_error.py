"""Fails at import: the daemon lists it as an `error` row and keeps going."""

import a_module_that_does_not_exist  # noqa: F401
