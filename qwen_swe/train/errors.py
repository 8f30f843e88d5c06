"""The error every run-config problem raises (config fields, precision, model setup, optimizer), so the CLI can print
it without a traceback. Its own module so that light modules (precision) raise it without loading the config."""


class ConfigError(ValueError):
    """One or more config fields are wrong; the message has one line per field."""
