"""Running the real command line in a subprocess, as a user would."""

import subprocess
import sys


def genstudio(*args, check=True, timeout=300):
    result = subprocess.run([sys.executable, "-m", "genstudio", *map(str, args)],
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result
