"""`python -m flexagents.serve -b HOST -p PORT`: daphne, as this project runs it.

Three differences from the bare `daphne … flexagents.asgi:application`:

1. daphne's own access log is off (`--verbosity 0`, `--access-log` refused):
   it prints every path with its raw query string (`?api_key=…`,
   `?ticket=…`). `flexagents.access.RequestLogMiddleware` logs each request
   instead, with the query string redacted.
2. Twisted does not parse form bodies. It parsed `multipart/form-data` POSTs
   itself and answered one it could not parse with a bare 400 before the
   application saw it; now every body reaches Django, which answers a
   non-JSON body under /api/ with a JSON 415.
3. The application path is fixed: `flexagents.asgi:application`.

Every other daphne option passes through unchanged.
"""
from __future__ import annotations

import sys

from daphne import http_protocol
from daphne.cli import CommandLineInterface

APPLICATION = "flexagents.asgi:application"


class FormBlindWebRequest(http_protocol.WebRequest):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)


def daphne_argv(argv: list[str]) -> list[str]:
    """daphne's arguments for ours; raises SystemExit for `--access-log`."""
    if any(arg == "--access-log" or arg.startswith("--access-log=") for arg in argv):
        raise SystemExit("flexagents.serve: --access-log is not supported; requests are logged, "
                         "redacted, by the application (logger flexagents.access)")
    # Last wins with argparse: verbosity 1+ would turn the raw access log on.
    return [*argv, "--verbosity", "0", APPLICATION]


def main(argv: list[str] | None = None) -> None:
    # daphne's protocol factory builds requests from this module attribute.
    http_protocol.WebRequest = FormBlindWebRequest  # type: ignore[misc]
    CommandLineInterface().run(daphne_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
