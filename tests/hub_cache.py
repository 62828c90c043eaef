"""Lay out a model folder in a Hugging Face Hub cache exactly as huggingface_hub does (blobs, snapshots, refs)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def add_to_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], revision: str = "main") -> str:
    """Store `files` as one commit of model repo `repo_id`; `revision` (branch or tag) points at it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(b"".join(hashlib.sha256(data).digest() for data in files.values())).hexdigest()
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return commit
