"""A repository's key in the project memory: stable across clones and moves.

The root commit's hash when the folder is a git work tree with history (every clone of a project
shares it), else a hash of the folder's resolved path.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def repository_key(root: Path) -> str:
    root = root.resolve()
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-list", "--max-parents=0", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    if out:
        return "git-" + min(out)[:16]
    return "path-" + hashlib.blake2b(str(root).encode(), digest_size=8).hexdigest()
