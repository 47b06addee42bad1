"""The model-randomisation sanity check only applies when there are learned float weights to shuffle:
a tree ensemble (skl2onnx TreeEnsembleClassifier) or a model whose shuffled copy predicts exactly as
it does gets 'does not apply', never 'FAILED'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from nnassay.reports.explain_view import headline, sanity_words
from nnassay.schemas.explain import SanityCheck
from nnassay.schemas.goals import Layout, ModelSpec
from nnassay.tasks.explain import ExplainOptions, explain_goal, failures_from_flags
from nnassay.tasks.explain.statement import sanity_words as statement_words
from nnassay.tasks.io.model_io import ModelRunner
from tests.explain.models import _save, dataset
from tests.zoo_models import build

pytest.importorskip("skl2onnx")


def _explained(model: ModelRunner, x: np.ndarray, folder: Path, methods=None):  # type: ignore[no-untyped-def]
    y = model.predict(x.astype(np.float32))
    y[:6] = (y[:6] + 1) % model.n_classes  # the first rows mislabelled: failures to explain
    names = tuple(f"f{i}" for i in range(x.shape[1]))
    data = dataset(x, y, "tabular", Layout.FLAT, names)
    failures = failures_from_flags("G1", model.predict(data.x) != data.y)
    return explain_goal(model, data, failures, folder, ExplainOptions(k=3, contrast=1, methods=methods))


def _no_failure_words(es) -> None:  # type: ignore[no-untyped-def]
    assert es.sanity and all(not c.applicable and not c.passed and c.note for c in es.sanity)
    assert "does not apply" in es.statement and "caution" not in es.statement
    assert "does not apply" in headline(es) and "FAILED" not in headline(es)
    for c in es.sanity:
        assert "does not apply" in sanity_words(c) and "FAILED" not in sanity_words(c)


def test_tree_ensemble_sanity_check_does_not_apply(tmp_path: Path) -> None:
    zoo = build("sk_forest", tmp_path, tiny=True)
    model = ModelRunner(ModelSpec(path=zoo.path, layout=Layout.FLAT), prefer_cuda=False)
    x = np.load(zoo.data)["x"][:40]
    es = _explained(model, x, tmp_path)
    _no_failure_words(es)
    assert "no learnable float weight" in es.sanity[0].note


def test_shuffle_that_changes_nothing_does_not_apply(tmp_path: Path) -> None:
    """Constant weight matrices: shuffling gives the same model, so the check tests nothing."""
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["logits"], transB=1)]
    w = np.ones((2, 5))
    path = _save(nodes, ["N", 5], {"W": w, "B": np.array([0.5, 0.0])}, tmp_path / "constant.onnx")
    model = ModelRunner(ModelSpec(path=path, layout=Layout.FLAT, value_range=(0.0, 1.0)), prefer_cuda=False)
    x = np.random.default_rng(0).uniform(0, 1, (30, 5))
    es = _explained(model, x, tmp_path, methods=("saliency",))
    _no_failure_words(es)
    assert "exactly the model's outputs" in es.sanity[0].note


def test_applicable_checks_keep_their_words() -> None:
    failed = SanityCheck(method="saliency", rank_correlation=0.9, threshold=0.5, passed=False)
    assert failed.applicable and "FAILED" in sanity_words(failed) and "caution" in statement_words(failed)


def test_table_panel_leaves_room_for_names_titles_and_ticks(tmp_path: Path) -> None:
    """The table panel is one PNG whose bar charts keep every long feature name, title and x tick
    label inside the figure (constrained layout), with two columns of samples."""
    from PIL import Image

    from nnassay.tasks.explain.pictures import panel_png

    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["logits"], transB=1)]
    w = np.random.default_rng(1).normal(size=(2, 5))
    path = _save(nodes, ["N", 5], {"W": w, "B": np.zeros(2)}, tmp_path / "linear.onnx")
    model = ModelRunner(ModelSpec(path=path, layout=Layout.FLAT, value_range=(0.0, 1.0)), prefer_cuda=False)
    x = np.random.default_rng(0).uniform(0, 1, (30, 5))
    es = _explained(model, x, tmp_path, methods=("saliency", "integrated_gradients"))
    names = [f"feature {i} with a rather long descriptive name" for i in range(5)]
    png = panel_png(
        es.samples, tmp_path, kind="tabular", layout=Layout.FLAT, value_range=(0.0, 1.0), feature_names=names
    )
    (tmp_path / "panel.png").write_bytes(png)
    assert png.startswith(b"\x89PNG") and Image.open(tmp_path / "panel.png").size[0] > 600
    import matplotlib.figure

    seen: list[matplotlib.figure.Figure] = []
    original = matplotlib.figure.Figure.savefig

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(self)
        return original(self, *args, **kwargs)

    matplotlib.figure.Figure.savefig = spy  # type: ignore[method-assign]
    try:
        panel_png(
            es.samples,
            tmp_path,
            kind="tabular",
            layout=Layout.FLAT,
            value_range=(0.0, 1.0),
            feature_names=names,
        )
    finally:
        matplotlib.figure.Figure.savefig = original  # type: ignore[method-assign]
    fig = seen[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    box = fig.bbox
    drawn = [ax for ax in fig.axes if ax.axison]
    assert len(drawn) == len(es.samples)
    for ax in drawn:
        tight = ax.get_tightbbox(renderer)
        assert tight.x0 >= box.x0 - 1 and tight.x1 <= box.x1 + 1 and tight.y0 >= box.y0 - 1
        assert tight.y1 <= box.y1 + 1
        assert all(len(t.get_text()) == 18 and t.get_text().endswith("\u2026") for t in ax.get_yticklabels())
        assert any(t.get_text() for t in ax.get_xticklabels())
