"""The explicit list of method modules; importing one registers its methods.

Add a module here when it defines registered methods, so every registration is visible in one place.
"""

import tasks.empirical.deployment  # noqa: F401  providers, float16, int8
import tasks.empirical.invalid  # noqa: F401  invalid input
import tasks.empirical.methods_blackbox  # noqa: F401  Square Attack, HopSkipJump
import tasks.empirical.methods_corruption  # noqa: F401  corruption accuracy, geometric worst case
import tasks.empirical.methods_whitebox  # noqa: F401  FGSM, PGD, APGD, AutoAttack-lite, minimal eps
import tasks.empirical.ood  # noqa: F401  OOD detection, domain shift
import tasks.empirical.tabular  # noqa: F401  tabular perturbations
import tasks.formal.methods  # noqa: F401  formal: local robustness, VNN-LIB property, max stable space
import tasks.statistical.ams  # noqa: F401  rare violations by adaptive multilevel splitting
import tasks.statistical.clever  # noqa: F401  CLEVER scores
import tasks.statistical.core  # noqa: F401  clean accuracy, noise accuracy / flip rate
import tasks.statistical.probabilistic  # noqa: F401  probabilistic robustness (Monte Carlo flip bounds)
import tasks.statistical.smoothing  # noqa: F401  randomized smoothing certificates
