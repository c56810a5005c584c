"""User-facing errors: one paragraph naming the setting or file and the fix, no traceback."""


class ArtGANError(Exception):
    """A user-facing error: one paragraph naming the setting or file and the fix."""


class ConfigError(ArtGANError):
    """A bad setting, caught before any heavy work. Exits with code 2."""

    exit_code = 2
