"""Machine-readable crosswalk: the clauses and controls the dossier cites, with reliability marks.

Rows are transcribed from shared/reference/STANDARDS.md, titles only, with its marks:
C confirmed, S secondary, U uncertain. Uncertain rows are shown as uncertain wherever they appear.
Never add a clause here that is not in that file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mark = Literal["C", "S", "U"]

TR1, TR2, RM, MS, AIA, NIST = (
    "ISO/IEC TR 24029-1",
    "ISO/IEC 24029-2",
    "ISO/IEC 23894",
    "ISO/IEC 42001",
    "EU AI Act",
    "NIST AI RMF",
)


@dataclass(frozen=True)
class Clause:
    """One clause, control or paragraph, as the standards map lists it."""

    standard: str
    ref: str
    title: str
    mark: Mark
    evidence: str = ""  # what this tool emits for it, from the map

    @property
    def key(self) -> str:
        return f"{self.standard} {self.ref}"

    @property
    def uncertain(self) -> bool:
        return self.mark == "U"


_ROWS: list[Clause] = [
    # ISO/IEC TR 24029-1:2021, clause list [C]; workflow step names [U]
    Clause(TR1, "4.1.1", "Robustness concept", "C", "stated robustness definition per assessment"),
    Clause(TR1, "4.1.2", "Typical workflow to assess robustness", "C", "workflow record"),
    Clause(TR1, "4.1.2 step 1 (goals)", "workflow step: state robustness goals", "U"),
    Clause(TR1, "4.1.2 step 2 (planning)", "workflow step: plan the tests", "U"),
    Clause(TR1, "4.1.2 step 3 (execution)", "workflow step: conduct the tests", "U"),
    Clause(TR1, "4.1.2 step 4 (interpretation)", "workflow step: analyse and interpret", "U"),
    Clause(TR1, "4.2", "Classification of methods", "C", "method class tag per test"),
    Clause(TR1, "5.2", "Robustness metrics available using statistical methods", "C"),
    Clause(TR1, "5.2.2", "Examples of performance measures for interpolation", "C"),
    Clause(TR1, "5.2.3", "Examples of performance measures for classification", "C"),
    Clause(TR1, "5.2.4", "Other measures", "C"),
    Clause(TR1, "5.3", "Statistical methods to measure robustness of a neural network", "C"),
    Clause(TR1, "5.3.2", "Contrastive measures", "C"),
    Clause(TR1, "6.2", "Robustness goal achievable using formal methods", "C"),
    Clause(TR1, "6.2.2", "Interpolation stability", "C"),
    Clause(TR1, "6.2.3", "Maximum stable space for perturbation resistance", "C"),
    Clause(TR1, "6.3", "Conduct the testing using formal methods", "C"),
    Clause(TR1, "6.3.1", "Using uncertainty analysis to prove interpolation stability", "C"),
    Clause(TR1, "6.3.2", "Using solver to prove a maximum stable space property", "C"),
    Clause(TR1, "6.3.3", "Using optimization techniques to prove a maximum stable space property", "C"),
    Clause(TR1, "6.3.4", "Using abstract interpretation to prove a maximum stable space property", "C"),
    Clause(TR1, "7.2", "Field trials", "C"),
    Clause(TR1, "7.3", "A posteriori testing", "C"),
    Clause(TR1, "7.4", "Benchmarking of neural networks", "C"),
    Clause(TR1, "Annex A", "Data perturbation (contents uncertain)", "U"),
    # ISO/IEC 24029-2:2023, clause list [C] up to 7.1
    Clause(TR2, "5.2", "Notion of domain", "C"),
    Clause(TR2, "5.3", "Stability", "C"),
    # ISO/IEC 23894:2023, clauses 4-6.7 [C], sub-clauses [S]
    Clause(RM, "6.2", "Communication and consultation", "C", "report distribution list / sign-off"),
    Clause(RM, "6.3", "Scope, context and criteria", "C", "acceptance thresholds stored with the plan"),
    Clause(RM, "6.4.2", "Risk identification", "S", "risk IDs that each robustness test addresses"),
    Clause(
        RM, "6.4.3", "Risk analysis (consequences, likelihood)", "S", "measured failure rates feed likelihood"
    ),
    Clause(RM, "6.4.4", "Risk evaluation", "S", "verdict vs criteria"),
    Clause(RM, "6.5", "Risk treatment", "C", "treatment link, re-test after treatment"),
    Clause(RM, "6.6", "Monitoring and review", "C", "re-assessments, drift of robustness metrics"),
    Clause(RM, "6.7", "Recording and reporting", "C", "the dossier + immutable run records"),
    Clause(RM, "Annex B", "Common AI-related risk sources", "C"),
    Clause(RM, "B.2", "complexity of environment", "C"),  # map: "C-ish, seen in a quoted excerpt"
    Clause(RM, "B.3", "lack of transparency and explainability", "C"),  # idem
    Clause(RM, "B.4", "level of automation", "S"),
    Clause(RM, "B.5", "risk sources related to machine learning", "S"),
    Clause(RM, "B.6", "system hardware issues", "S"),
    Clause(RM, "B.7", "system life cycle issues", "S"),
    Clause(RM, "B.8", "technology readiness", "S"),
    # ISO/IEC 42001:2023, management-system clauses and Annex A controls [S]
    Clause(MS, "6.1.2", "AI risk assessment", "S"),
    Clause(MS, "6.1.3", "AI risk treatment", "S"),
    Clause(MS, "A.3.2", "AI roles and responsibilities", "S", "assessor / approver fields"),
    Clause(MS, "A.4.2", "Resource documentation", "S", "resource inventory"),
    Clause(MS, "A.4.3", "Data resources", "S", "dataset IDs + SHA-256"),
    Clause(MS, "A.4.4", "Tooling resources", "S", "tool versions, lockfile hash"),
    Clause(MS, "A.4.5", "System and computing resources", "S", "hardware, execution provider"),
    Clause(MS, "A.6.1.2", "Objectives for responsible development of AI system", "S", "robustness goals"),
    Clause(MS, "A.6.1.3", "Processes for responsible AI system design and development", "S", "the flow"),
    Clause(MS, "A.6.2.2", "AI system requirements and specification", "S", "requirements + criteria"),
    Clause(MS, "A.6.2.3", "Documentation of AI system design and development", "S", "model facts"),
    Clause(MS, "A.6.2.4", "AI system verification and validation", "S", "plan, results, verdicts"),
    Clause(MS, "A.6.2.5", "AI system deployment", "S", "release gate record"),
    Clause(MS, "A.6.2.6", "AI system operation and monitoring", "S", "re-assessments, metric trend"),
    Clause(MS, "A.6.2.7", "AI system technical documentation", "S", "the PDF dossier + JSON bundle"),
    Clause(MS, "A.6.2.8", "AI system recording of event logs", "S", "run ids, timestamps"),
    Clause(MS, "A.7.2", "Data for development and enhancement of AI system", "S", "data used in tests"),
    Clause(MS, "A.7.3", "Acquisition of data", "S", "source/licence of test data"),
    Clause(MS, "A.7.4", "Quality of data for AI systems", "S", "data-quality checks on test sets"),
    Clause(MS, "A.7.5", "Data provenance", "S", "dataset hash, origin"),
    Clause(MS, "A.7.6", "Data preparation", "S", "perturbation recipe + seeds"),
    Clause(MS, "A.8.2", "System documentation and information for users", "S", "declared robustness limits"),
    Clause(MS, "A.9.4", "Intended use of the AI system", "S", "operating domain"),
    Clause(MS, "A.10.3", "Suppliers", "S", "third-party model provenance"),
    # EU AI Act (Regulation (EU) 2024/1689), paraphrased [C]
    Clause(
        AIA,
        "Art. 15(1)",
        "appropriate accuracy, robustness, cybersecurity, consistently over the lifecycle",
        "C",
    ),
    Clause(AIA, "Art. 15(2)", "benchmarks and measurement methodologies", "C"),
    Clause(AIA, "Art. 15(3)", "accuracy levels and metrics declared in the instructions for use", "C"),
    Clause(AIA, "Art. 15(4)", "resilience to errors, faults and inconsistencies", "C"),
    Clause(AIA, "Art. 15(5)", "resilience against attempts to alter use, outputs or performance", "C"),
    Clause(AIA, "Art. 9", "risk management system", "C"),
    Clause(AIA, "Art. 11 + Annex IV", "technical documentation", "C"),
    Clause(AIA, "Art. 12", "record-keeping", "C"),
    Clause(AIA, "Art. 72", "post-market monitoring", "C"),
    # NIST AI RMF 1.0 (AI 100-1)
    Clause(NIST, "MEASURE 2.1", "test sets, metrics and TEVV tools documented", "C"),
    Clause(NIST, "MEASURE 2.3", "performance measured for conditions similar to deployment", "C"),
    Clause(NIST, "MEASURE 2.4", "functionality and behaviour monitored in production", "S"),
    Clause(NIST, "MEASURE 2.5", "demonstrated valid and reliable; limits of generalisation documented", "C"),
    Clause(NIST, "MEASURE 2.6", "evaluated for safety risks; residual risk within tolerance", "C"),
    Clause(NIST, "MEASURE 2.7", "security and resilience evaluated and documented", "C"),
    Clause(NIST, "MANAGE 4.1", "post-deployment monitoring plans implemented", "S"),
]
CLAUSES: dict[str, Clause] = {c.key: c for c in _ROWS}

SHORT = {TR1: "TR 24029-1", TR2: "24029-2", RM: "23894", MS: "42001", AIA: "AI Act", NIST: "NIST"}


def get(standard: str, ref: str) -> Clause:
    """A clause of the map; KeyError names the valid refs of that standard."""
    key = f"{standard} {ref}"
    if key not in CLAUSES:
        valid = [c.ref for c in _ROWS if c.standard == standard]
        raise KeyError(f"{key!r} is not in the standards map; {standard} refs: {valid}")
    return CLAUSES[key]


def control(ref: str) -> Clause | None:
    """An ISO/IEC 42001 Annex A control by id ('A.6.2.4'), or None when the map does not list it."""
    return CLAUSES.get(f"{MS} {ref}")


def tr_clause(ref: str) -> Clause | None:
    """A TR 24029-1 clause by number, or None when the map does not list it."""
    return CLAUSES.get(f"{TR1} {ref}")


def risk_source(text: str) -> Clause | None:
    """The 23894 Annex B item a free-text risk source starts with ('B.5 ...'), if any."""
    ref = text.strip().split(" ", 1)[0]
    return CLAUSES.get(f"{RM} {ref}")


def label(c: Clause) -> str:
    """'42001 A.6.2.4' style short label."""
    return f"{SHORT[c.standard]} {c.ref}"


@dataclass(frozen=True)
class ClauseRef:
    """A clause as a section cites it."""

    label: str
    title: str
    mark: str
    uncertain: bool


def clause_ref(c: Clause) -> ClauseRef:
    """A clause of the map as the dossier cites it."""
    return ClauseRef(label(c), c.title, c.mark, c.uncertain)


_S = [(RM, "6.7")]
SECTIONS: dict[str, list[tuple[str, str]]] = {
    "summary": [(RM, "6.4.4"), (RM, "6.5"), (MS, "6.1.3"), (AIA, "Art. 9"), (NIST, "MEASURE 2.6")],
    "scope": [(RM, "6.3"), (MS, "A.9.4"), (MS, "A.6.2.2"), (NIST, "MEASURE 2.3")],
    "goals": [
        (MS, "A.6.1.2"),
        (MS, "A.6.2.2"),
        (TR1, "4.1.2 step 1 (goals)"),
        (TR1, "4.1.1"),
        (RM, "6.4.2"),
        (AIA, "Art. 15(1)"),
    ],
    "plan": [
        (TR1, "4.2"),
        (TR1, "4.1.2 step 2 (planning)"),
        (MS, "A.6.2.4"),
        (MS, "A.7.6"),
        (RM, "6.4.2"),
        (AIA, "Art. 11 + Annex IV"),
        (NIST, "MEASURE 2.1"),
    ],
    "results": [
        (TR1, "4.1.2 step 3 (execution)"),
        (RM, "6.4.3"),
        (MS, "A.6.2.4"),
        (AIA, "Art. 15(3)"),
        (AIA, "Art. 15(4)"),
        (AIA, "Art. 15(5)"),
        (NIST, "MEASURE 2.5"),
        (NIST, "MEASURE 2.7"),
    ],
    "interpretation": [
        (TR1, "4.1.2 step 4 (interpretation)"),
        (RM, "6.4.4"),
        (RM, "6.5"),
        (NIST, "MEASURE 2.6"),
    ],
    "risks": [
        (RM, "6.4.2"),
        (RM, "6.4.3"),
        (RM, "6.4.4"),
        (RM, "6.5"),
        (RM, "Annex B"),
        (MS, "6.1.2"),
        (MS, "6.1.3"),
        (AIA, "Art. 9"),
    ],
    "controls": [(MS, "A.6.2.4"), (MS, "A.6.2.7"), (AIA, "Art. 15(1)"), (NIST, "MEASURE 2.1")],
    "provenance": [
        *_S,
        (MS, "A.4.3"),
        (MS, "A.4.4"),
        (MS, "A.4.5"),
        (MS, "A.7.5"),
        (AIA, "Art. 12"),
        (NIST, "MEASURE 2.1"),
    ],
    "records": [(MS, "A.3.2"), (MS, "A.6.2.8"), (MS, "A.6.2.7"), (RM, "6.2"), *_S, (AIA, "Art. 12")],
    "history": [
        (RM, "6.6"),
        (MS, "A.6.2.6"),
        (AIA, "Art. 15(1)"),
        (AIA, "Art. 72"),
        (NIST, "MEASURE 2.4"),
        (NIST, "MANAGE 4.1"),
    ],
}
LIFECYCLE = [  # evidenced only by a series of assessments (at least two in the evidence chain)
    (RM, "6.6"),
    (MS, "A.6.2.6"),
    (AIA, "Art. 15(1)"),
    (AIA, "Art. 72"),
    (NIST, "MEASURE 2.4"),
    (NIST, "MANAGE 4.1"),
]
FAMILY_CLAUSES = {"statistical": ["5.2", "5.3"], "formal": ["6.2", "6.3"], "empirical": ["7.3", "7.4"]}


def section_clauses(section: str) -> list[Clause]:
    """The clauses a dossier section evidences."""
    return [get(standard, ref) for standard, ref in SECTIONS[section]]
