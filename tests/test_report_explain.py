"""The dossier shows each failed goal's explanations beside its deciding test, as the pipeline writes
them: one panel picture per goal (checked against its digest), then a row per sample with its
classes, top features and deletion score; faithfulness in words, the sanity check, the statement;
contrast samples marked; feature flips for tables; hostile strings escaped; and the PDF carries the
panels and the words (read back from the PDF)."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from nnassay.reports.explain_view import explanation_views, faithfulness_words, headline
from nnassay.reports.pictures import dossier_pictures, explanation_pictures
from nnassay.reports.render import render_html, render_markdown, render_pdf
from nnassay.schemas.common import Interval
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.explain import (
    ExplainedSample,
    ExplanationSet,
    FaithfulnessSummary,
    FeatureFlip,
    SampleFaithfulness,
    SanityCheck,
)
from nnassay.schemas.goals import Layout
from nnassay.schemas.results import ArtifactRef
from nnassay.tasks.explain.pictures import panel_png

GOLDEN = Path(__file__).parent / "golden" / "digits_evidence.json"  # the digits example's evidence
HOSTILE = "<script>alert('x')</script>"
TOP_FEATURE = "rows 2-3, cols 4-5"
TABLE_FEATURE = "income & <b>bold</b>"


@dataclass(frozen=True)
class Explained:
    """A digits bundle with explanations of G6 (images) and G8 (a table), and its run folder."""

    ev: EvidenceBundle
    run_dir: Path
    pictures: dict[str, bytes]  # artifact path -> PNG bytes written to the run folder (a panel per goal)


def _with_panel(es: ExplanationSet, run_dir: Path, kind: str, layout: Layout) -> ExplanationSet:
    """The set with its goal's panel, drawn and recorded as ``explain_one`` does: ``panel.png`` in the
    goal's folder, from the arrays there, its digest and caption in ``ExplanationSet.picture``."""
    folder = run_dir / "explanations" / es.goal_id
    names = es.samples[0].top_features if kind == "tabular" else ()
    payload = panel_png(
        es.samples, folder, kind=kind, layout=layout, value_range=(0.0, 1.0), feature_names=names
    )
    (folder / "panel.png").write_bytes(payload)
    picture = ArtifactRef(
        path=f"explanations/{es.goal_id}/panel.png",
        sha256=hashlib.sha256(payload).hexdigest(),
        media_type="image/png",
        caption=f"Goal {es.goal_id}: panel of {len(es.samples)} explanations",
    )
    return es.model_copy(update={"picture": picture})


def _arrays(folder: Path, sample: ExplainedSample, shape: tuple[int, ...], rng: np.random.Generator) -> None:
    """The sample's input and attribution arrays, where the panel reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / sample.input_file, rng.uniform(size=shape))
    np.save(folder / sample.attribution_file, rng.normal(size=shape))


def _sample(index: int, role: str, method: str, **extra: object) -> ExplainedSample:
    return ExplainedSample.model_validate(
        {
            "sample_index": index,
            "role": role,
            "method": method,
            "predicted_class": 3 if role == "failure" else 8,
            "true_class": 8,
            "contrast_class": 8 if role == "failure" else 1,
            "input_kind": "failing_input" if role == "failure" else "clean",
            "top_features": [TOP_FEATURE, "rows 0-1, cols 0-1"],
            "top_scores": [0.42, -0.05],
            "faithfulness": SampleFaithfulness(
                deletion_aopc=0.31, deletion_aopc_random=0.05, insertion_auc=0.8, insertion_auc_random=0.41
            ),
            "attribution_sha256": "a" * 64,
            "input_sha256": "b" * 64,
            "attribution_file": f"attr_{index}_{method}.npy",
            "input_file": f"x_{index}.npy",
            **extra,
        }
    )


def _summary(method: str, beats: bool) -> FaithfulnessSummary:
    low, high = (0.12, 0.31) if beats else (-0.04, 0.06)
    return FaithfulnessSummary(
        method=method,  # type: ignore[arg-type]
        samples=2,
        deletion_aopc=0.31 if beats else 0.07,
        deletion_aopc_interval=Interval(low=0.2, high=0.4, confidence=0.95, method="bootstrap"),
        deletion_aopc_random=0.05,
        gain_interval=Interval(low=low, high=high, confidence=0.95, method="bootstrap"),
        insertion_auc=0.8,
        insertion_auc_random=0.41,
        beats_random=beats,
    )


def _image_set(run_dir: Path) -> ExplanationSet:
    rng = np.random.default_rng(0)
    samples = []
    for index, role in ((4, "failure"), (9, "failure"), (17, "contrast")):
        for method in ("integrated_gradients", "saliency"):
            samples.append(_sample(index, role, method))
            _arrays(run_dir / "explanations" / "G6", samples[-1], (1, 8, 8), rng)
    found = ExplanationSet(
        goal_id="G6",
        methods=["integrated_gradients", "saliency"],
        engine="torch_executor",
        engine_reason="the executor runs every op of the model",
        executor_max_deviation=2e-6,
        failures_available=23,
        samples=samples,
        faithfulness=[_summary("integrated_gradients", True), _summary("saliency", False)],
        sanity=[
            SanityCheck(method="integrated_gradients", rank_correlation=0.08, threshold=0.5, passed=True),
            SanityCheck(method="saliency", rank_correlation=0.93, threshold=0.5, passed=False),
        ],
        baseline="the mean of the test inputs",
        statement="Integrated gradients point at the stroke the attack thickened.",
        time_s=3.2,
    )
    return _with_panel(found, run_dir, "image", Layout.NCHW)


def _table_set(run_dir: Path) -> ExplanationSet:
    names = [TABLE_FEATURE, HOSTILE, "age"]
    flip = FeatureFlip(feature=HOSTILE, value=3.5, change=1.25, new_class=1)
    sample = _sample(
        2,
        "failure",
        "feature_ablation",
        top_features=names,
        top_scores=[0.9, -0.2, 0.1],
        input_kind="clean",
        feature_flips=[flip],
    )
    _arrays(run_dir / "explanations" / "G8", sample, (3,), np.random.default_rng(1))
    found = ExplanationSet(
        goal_id="G8",
        methods=["feature_ablation"],
        engine="onnx_runtime",
        engine_reason=f"the executor lacks op {HOSTILE}",
        failures_available=5,
        samples=[sample],
        faithfulness=[_summary("feature_ablation", True)],
        sanity=[SanityCheck(method="feature_ablation", rank_correlation=0.1, threshold=0.5, passed=True)],
        baseline="each feature's median",
        statement=f"The decision rests on {HOSTILE} and {TABLE_FEATURE}.",
        time_s=0.4,
    )
    return _with_panel(found, run_dir, "tabular", Layout.FLAT)


def make_explained(run_dir: Path) -> Explained:
    ev = EvidenceBundle.model_validate_json(GOLDEN.read_text())
    image, table = _image_set(run_dir), _table_set(run_dir)
    panels = {
        es.picture.path: (run_dir / es.picture.path).read_bytes() for es in (image, table) if es.picture
    }
    for result in ev.results:  # the results' own pictures, so both kinds are shown side by side
        for artifact in result.artifacts:
            if artifact.media_type == "image/png":
                buffer = io.BytesIO()
                Image.new("RGB", (30, 20), "white").save(buffer, format="PNG")
                (run_dir / artifact.path).parent.mkdir(parents=True, exist_ok=True)
                (run_dir / artifact.path).write_bytes(buffer.getvalue())
    results = [
        r.model_copy(
            update={
                "artifacts": [
                    a.model_copy(
                        update={"sha256": hashlib.sha256((run_dir / a.path).read_bytes()).hexdigest()}
                    )
                    if a.media_type == "image/png"
                    else a
                    for a in r.artifacts
                ]
            }
        )
        for r in ev.results
    ]
    ev = ev.model_copy(update={"explanations": [image, table], "results": results})
    return Explained(EvidenceBundle.model_validate_json(ev.model_dump_json()), run_dir, panels)


@pytest.fixture()
def explained(tmp_path: Path) -> Explained:
    return make_explained(tmp_path)


def _uri(payload: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(payload).decode()


def _section(html: str, start: str, end: str) -> str:
    return html[html.index(start) : html.index(end, html.index(start))]


def test_explanations_are_shown_beside_the_goals_failures(explained: Explained) -> None:
    html = render_html(explained.ev, explained.run_dir)
    g6 = _section(html, "<h4>G6/empirical.pgd_linf", "<h4>G7/")  # the attack's result and its explanations
    assert "Explanations of G6" in g6 and "Explanations of G8" not in g6
    for path, payload in explained.pictures.items():
        assert _uri(payload) in html, path
        assert (_uri(payload) in g6) == path.startswith("explanations/G6/")
    assert "Explanations of G8" in _section(html, "<h4>G8/empirical.invalid_input", "<h4>G9/")
    assert html.count("Explanations of G") == 2  # goals without explanations show nothing
    assert "4 of 23 failed samples" not in g6 and "2 of 23 failed samples explained" in g6
    assert "Goal G6: panel of 6 explanations" in g6  # the panel's caption, as the explain step wrote it
    assert TOP_FEATURE in g6 and "predicted 3, true 8; against 8" in g6
    assert "integrated gradients: rows 2-3, cols 4-5, rows 0-1, cols 0-1 (deletion 0.31 vs random 0.05)" in g6
    assert "<td>4 (failure; failing input)</td>" in g6 and "<td>17 (CONTRAST; test row)</td>" in g6
    assert "Integrated gradients: beats random" in g6 and "0.12 to 0.31 (95% bootstrap interval" in g6
    assert "Saliency (input gradient): does NOT beat random" in g6
    assert "Sanity check of integrated gradients passed" in g6
    assert "Sanity check of saliency (input gradient) FAILED" in g6
    assert "Integrated gradients point at the stroke the attack thickened." in g6
    assert "NOT SHOWN" not in html


def test_a_tabular_explanation_shows_its_flips_and_panel(explained: Explained) -> None:
    html = render_html(explained.ev, explained.run_dir)
    g8 = _section(html, "Explanations of G8", "<h4>G9/")
    assert "Flips: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; to 3.5 gives 1" in g8
    assert "engine: ONNX Runtime alone (black box), the executor lacks op" in g8
    assert _uri(explained.pictures["explanations/G8/panel.png"]) in g8


def test_a_changed_or_missing_panel_is_not_shown_as_valid(explained: Explained) -> None:
    changed, missing = "explanations/G6/panel.png", "explanations/G8/panel.png"
    tampered = Image.new("RGB", (10, 10), "red")
    buffer = io.BytesIO()
    tampered.save(buffer, format="PNG")
    (explained.run_dir / changed).write_bytes(buffer.getvalue())
    (explained.run_dir / missing).unlink()
    html = render_html(explained.ev, explained.run_dir)
    assert _uri(buffer.getvalue()) not in html and _uri(explained.pictures[changed]) not in html
    g6 = _section(html, "Explanations of G6", "<h4>G7/")
    g8 = _section(html, "Explanations of G8", "<h4>G9/")
    assert "panel picture NOT SHOWN: file changed since the assessment" in g6
    assert "panel picture NOT SHOWN: file not found beside the evidence" in g8
    assert g6.count("<tr") == 1 + 3 and g8.count("<tr") == 1 + 1  # the rows stay, with their numbers


def test_hostile_strings_are_escaped(explained: Explained) -> None:
    html = render_html(explained.ev, explained.run_dir)
    assert "<script>" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "income &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    markdown = render_markdown(explained.ev)
    assert "<script>" not in markdown


def test_summary_has_one_line_per_explained_goal(explained: Explained) -> None:
    markdown = render_markdown(explained.ev)
    lines = [line for line in markdown.splitlines() if line.startswith("- G")]
    assert lines == [
        "- G6: integrated gradients (beats random: yes); saliency (input gradient) (beats random: no); "
        "sanity check FAILED for some methods",
        "- G8: feature ablation (beats random: yes); sanity check passed",
    ]
    plain = EvidenceBundle.model_validate_json(GOLDEN.read_text())
    assert "Explanations of failures" not in render_markdown(plain)
    assert "Explanations of G" not in render_html(plain)


def test_words_follow_the_recorded_flags_not_the_numbers() -> None:
    unscored = _summary("occlusion", True).model_copy(update={"samples": 0})
    assert "not established" in faithfulness_words(unscored)
    assert "beats random: no" in headline(
        ExplanationSet.model_validate(
            {
                **_image_set_stub(),
                "methods": ["occlusion"],
                "faithfulness": [unscored.model_dump()],
                "sanity": [],
            }
        )
    )


def _image_set_stub() -> dict[str, object]:
    return {
        "goal_id": "G1",
        "methods": [],
        "engine": "onnx_runtime",
        "engine_reason": "r",
        "failures_available": 0,
        "samples": [],
        "faithfulness": [],
        "sanity": [],
        "baseline": "b",
        "statement": "s",
        "time_s": 0.0,
    }


def test_every_shown_picture_is_listed_for_embedding(explained: Explained) -> None:
    listed = {a.path for a in dossier_pictures(explained.ev)}
    assert set(explained.pictures) <= listed
    assert {
        a.path for r in explained.ev.results for a in r.artifacts if a.media_type == "image/png"
    } <= listed
    views = explanation_views(explained.ev, None, str)  # no run folder: no file is read
    assert set(views) == {"G6", "G8"} and views["G6"].panel == "" and views["G6"].panel_note == ""
    assert views["G6"].panel_caption == "Goal G6: panel of 6 explanations"


# ---------------------------------------------------------------- the PDF, read back


@pytest.fixture(scope="module")
def pdf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Explained, PdfReader]:
    case = make_explained(tmp_path_factory.mktemp("pdf"))
    payload, refused = render_pdf(render_html(case.ev, case.run_dir))
    assert not refused
    return case, PdfReader(io.BytesIO(payload))


def _rgb(image: Image.Image) -> bytes:
    if image.mode in ("RGBA", "LA", "P"):
        canvas = Image.new("RGB", image.size, "white")
        canvas.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
        return canvas.tobytes()
    return image.convert("RGB").tobytes()


@pytest.mark.slow
def test_the_pdf_embeds_every_explanation_picture(pdf: tuple[Explained, PdfReader]) -> None:
    case, reader = pdf
    in_pdf = [image.image for page in reader.pages for image in page.images if image.image is not None]
    sizes = [im.size for im in in_pdf]
    for path, payload in case.pictures.items():
        original = Image.open(io.BytesIO(payload))
        assert original.size in sizes, path
    assert len(in_pdf) >= len(case.pictures) + 3  # plus the results' own pictures
    g8 = Image.open(io.BytesIO(next(p for k, p in case.pictures.items() if "G8" in k)))
    same = [im for im in in_pdf if im.size == g8.size]
    assert any(_rgb(im) == _rgb(g8) for im in same)  # the bar chart's pixels, unchanged


@pytest.mark.slow
def test_the_pdf_text_says_why_and_whether_it_beats_random(pdf: tuple[Explained, PdfReader]) -> None:
    _, reader = pdf
    text = re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))
    for needle in (
        "Explanations of G6",
        "Explanations of G8",
        "Integrated gradients: beats random",
        "does NOT beat random",
        "Sanity check of saliency (input gradient) FAILED",
        TOP_FEATURE,
        "17 (CONTRAST; test row)",
        HOSTILE,
    ):
        assert needle in text, needle


def _blanked(pdf: bytes, size: tuple[int, int]) -> bytes:
    """The first picture of ``size`` replaced by a white one, appended as an incremental update."""
    from pypdf import PdfWriter

    writer = PdfWriter(io.BytesIO(pdf), incremental=True)
    for page in writer.pages:
        for image in page.images:
            if image.image is not None and image.image.size == size:
                image.replace(Image.new("RGB", size, "white"))
                out = io.BytesIO()
                writer.write(out)
                return out.getvalue()
    raise AssertionError(f"no picture of size {size} in the dossier")


@pytest.mark.slow
def test_the_pdf_alone_rerenders_with_its_explanation_pictures(tmp_path: Path) -> None:
    """The whole-page comparison of ``evidence verify``: the dossier embeds the explanation pictures
    it shows and renders again from itself alone to the same pages; a blanked explanation picture,
    or a page rendered from a changed picture file, is found."""
    from nnassay.tasks.governance.dossier import dossier_attachments, picture_name, rerender, write_pdf
    from nnassay.tasks.governance.pdf_compare import compare_pages
    from nnassay.tasks.governance.pdf_verify import embedded_files

    case = make_explained(tmp_path)
    payload = case.ev.model_dump_json().encode()
    attachments = dossier_attachments(case.ev, payload, [], case.run_dir)
    assert {picture_name(a) for a in dossier_pictures(case.ev)} <= {a.name for a in attachments}
    pdf, _ = write_pdf(render_html(case.ev, case.run_dir), tmp_path / "d.pdf", attachments=attachments)
    original = pdf.read_bytes()
    again = rerender(case.ev, payload, embedded_files(original))
    assert compare_pages(original, again) == []
    bars = Image.open(io.BytesIO(next(p for k, p in case.pictures.items() if "G8" in k)))
    assert compare_pages(_blanked(original, bars.size), again)
    table = next(k for k in case.pictures if "G8" in k)
    (case.run_dir / table).write_bytes(case.pictures[table] + b"changed")
    forged, _ = write_pdf(render_html(case.ev, case.run_dir), tmp_path / "f.pdf", attachments=attachments)
    assert compare_pages(forged.read_bytes(), again)


def test_a_goal_panel_is_shown_once_with_a_row_per_sample(explained: Explained) -> None:
    """What the pipeline draws: one panel per goal, then a compact table with every method of a
    sample on its row, failures first."""
    html = render_html(explained.ev, explained.run_dir)
    g6 = _section(html, "<h4>G6/empirical.pgd_linf", "<h4>G7/")
    panel = explained.pictures["explanations/G6/panel.png"]
    assert g6.count(_uri(panel)) == 1 and "Goal G6: panel of 6 explanations" in g6
    rows = _section(g6, '<table class="explained-rows">', "</table>")
    assert rows.count("<tr") == 1 + 3  # header, then samples 4, 9 and 17 with both methods on each row
    assert rows.count("integrated gradients: ") == 3 and rows.count("saliency (input gradient): ") == 3
    assert rows.index("4 (failure") < rows.index("9 (failure") < rows.index("17 (CONTRAST")
    assert '<tr class="contrast"><td>17 (CONTRAST' in rows
    assert [a.path for a in explanation_pictures(explained.ev)] == [
        "explanations/G6/panel.png",
        "explanations/G8/panel.png",
    ]


def test_a_goal_without_a_panel_still_shows_its_rows(explained: Explained) -> None:
    """A set recorded without a panel (ExplanationSet.picture None) shows no figure, only its rows."""
    image = explained.ev.explanations[0].model_copy(update={"picture": None})
    ev = explained.ev.model_copy(update={"explanations": [image, *explained.ev.explanations[1:]]})
    g6 = _section(render_html(ev, explained.run_dir), "Explanations of G6", "<h4>G7/")
    assert "explain-panel" not in g6 and "data:image/png" not in g6 and "NOT SHOWN" not in g6
    assert g6.count("<tr") == 1 + 3 and "17 (CONTRAST; test row)" in g6
    assert "explanations/G6/panel.png" not in {a.path for a in dossier_pictures(ev)}
