"""JSON summaries of what the reader found, for the command line (`theatrum series`)."""

from __future__ import annotations

from reconstruction.series import Scan


def scan_summary(scan: Scan) -> dict:
    """The series found (numbered from 1, as ``--series N`` accepts) and every skipped file with its reason.

    For the operator's own terminal: the series UID is shown so that ``--series`` can name it. Nothing here
    goes to a client, a GLB or a log.
    """
    return {
        "series": [
            {
                "number": n,
                "uid": s.uid,
                "modality": s.modality,
                "description": s.description,
                "slices": s.slice_count,
                "instances": s.instance_count,
                "rows": s.rows,
                "columns": s.columns,
                "spacing_mm": [round(v, 6) for v in s.spacing_mm],
                "slice_thickness_mm": s.slice_thickness,
            }
            for n, s in enumerate(scan.series, start=1)
        ],
        "skipped": [{"path": str(k.path), "reason": k.reason} for k in scan.skipped],
    }
