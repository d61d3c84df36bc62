"""The verbs of the ``mudi`` command, one module each: ``HELP`` (one line), ``CONFIG`` (the config dataclass
the CLI flags are generated from), optionally ``POSITIONAL`` (the field taken as positional arguments) and
``ALIASES`` (extra constant-setting flags), and ``main(config) -> exit code``.

A verb parses nothing itself and owns no logic: it calls one library entry point and prints a summary. No
verb imports another verb (tested); pipelines of stages call the library.
"""
