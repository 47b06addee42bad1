"""Pictures the dossier shows (PNG artifacts of results and of explanations), each read from the run
folder and shown only when its bytes have the digest the evidence records.

``dossier_pictures`` lists them once each in document order: the governance step embeds exactly
these in the PDF, so the PDF alone can be rendered again and compared page by page.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path

from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.results import ArtifactRef

PictureSource = Callable[[ArtifactRef], str]  # picture artifact -> data URI to show in its place
NOT_FOUND = "NOT SHOWN: file not found beside the evidence"
CHANGED = "NOT SHOWN: file changed since the assessment"


def load_picture(
    artifact: ArtifactRef, run_dir: Path | None, source: PictureSource | None = None
) -> tuple[str, str] | None:
    """(data URI, '') of a picture whose file has the recorded digest; ('', why) when it must not be
    shown (missing, outside the run folder, changed); None when there is no run folder to read."""
    if source is not None:
        return source(artifact), ""
    if run_dir is None:
        return None
    path = (run_dir / artifact.path).resolve()
    if not path.is_relative_to(run_dir.resolve()) or not path.is_file():
        return "", NOT_FOUND
    payload = path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != artifact.sha256:
        return "", CHANGED
    return "data:image/png;base64," + base64.b64encode(payload).decode(), ""


def explanation_pictures(ev: EvidenceBundle) -> list[ArtifactRef]:
    """The pictures of the explanations (each goal's panel), in order."""
    return [
        es.picture
        for es in ev.explanations
        if es.picture is not None and es.picture.media_type == "image/png"
    ]


def dossier_pictures(ev: EvidenceBundle) -> list[ArtifactRef]:
    """Every picture the dossier shows, once each by path: results' PNG artifacts, then explanations'."""
    found: dict[str, ArtifactRef] = {}
    for result in ev.results:
        for artifact in result.artifacts:
            if artifact.media_type == "image/png":
                found.setdefault(artifact.path, artifact)
    for artifact in explanation_pictures(ev):
        found.setdefault(artifact.path, artifact)
    return list(found.values())
