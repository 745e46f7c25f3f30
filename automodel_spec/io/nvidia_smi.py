"""What ``nvidia-smi`` says about this host's GPUs and the processes on them (``None``: no answer)."""

from __future__ import annotations

import os
import subprocess

# marks the calling process in processes_on: nobody can wait for it to leave the GPU
OWN = " (this process)"


def query(fields: str) -> list[list[str]] | None:
    """``nvidia-smi --query-<fields> --format=csv,noheader`` as rows of stripped fields.

    Args:
        fields: e.g. ``gpu=index,uuid`` or ``compute-apps=pid,process_name,used_memory,gpu_uuid``.

    Returns:
        The rows, or ``None`` when ``nvidia-smi`` is missing or fails (no GPU driver here).
    """
    try:
        out = subprocess.run(["nvidia-smi", f"--query-{fields}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [[f.strip() for f in line.split(",")] for line in out.splitlines() if line.strip()]


def gpu_indices() -> list[str] | None:
    """The GPUs' indices as ``nvidia-smi`` numbers them (PCI bus order), or ``None``."""
    rows = query("gpu=index")
    return [row[0] for row in rows] if rows else None


def gpu_uuids() -> dict[str, str]:
    """``{index: uuid}`` for every GPU (empty when ``nvidia-smi`` gives no answer)."""
    return {row[0]: row[1] for row in query("gpu=index,uuid") or [] if len(row) >= 2}


def free_mib(gpus: list[str]) -> int | None:
    """The least memory free (MiB) among ``gpus``, or ``None`` where ``nvidia-smi`` does not say."""
    free = []
    for row in query("gpu=index,memory.free") or []:
        amount = row[1].split()[0] if len(row) >= 2 and row[1].split() else ""
        if row[0] in gpus and amount.isdigit():
            free.append(int(amount))
    return min(free) if free else None


def processes_on(gpus: list[str] | None) -> list[str]:
    """The compute processes on ``gpus`` (indices or UUIDs), each as ``"pid, name, memory"``.

    ``None`` means every GPU. A process whose GPU ``nvidia-smi`` does not name is counted in, as
    is every process when the GPUs cannot be mapped to UUIDs: better a needless wait than a
    measurement beside another server that went unnoticed. The calling process itself is marked
    ``(this process)``: nobody can wait for it to leave, and it names memory we hold ourselves.
    """
    rows = query("compute-apps=pid,process_name,used_memory,gpu_uuid") or []
    uuids = gpu_uuids()
    index_of = {uuid: index for index, uuid in uuids.items()}
    wanted = None if gpus is None else {uuids.get(g, g) for g in gpus}
    found = []
    for row in rows:
        uuid = row[3] if len(row) >= 4 else None
        if wanted is not None and uuid is not None and uuid in index_of and uuid not in wanted:
            continue
        where = f" (GPU {index_of[uuid]})" if uuid in index_of else ""
        found.append(", ".join(row[:3]) + where + (OWN if row[0] == str(os.getpid()) else ""))
    return found

