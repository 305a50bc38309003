"""The ``triofetch`` command line, built on the public API of :mod:`triofetch` only.

This package owns what a user types and reads: the arguments (``_parser``), the settings
from the environment and the config file (``_config``), the downloader's options
(``_upstream``), the commands
(``_sync``, ``_inspect``, ``_export``, ``_repair``, ``_maintenance``, ``_serve``, ``_demo``,
``_completion``), their
messages and exit statuses (``_common``, ``_main``), the progress bars (``_progress``) and
the program's first steps before anything heavy is loaded (``_startup``).  It must not
import a private module of ``triofetch`` nor hold library policy (which transport, which
temp files to remove, which CA file is usable): it asks the public API
(``Downloader(transport="auto")``, ``ArtifactStorage.removing_temp_files()``, the
downloader's own check of ``verify=``) and turns its errors into one line and a status.

This file imports nothing: ``triofetch.__main__`` imports :mod:`._startup` first (signals
are taken from then on), then :func:`._main.main` with the heavy imports.
"""

__all__: list[str] = []
