"""The explicit list of method modules; importing one registers its methods.

Add a module here when it defines registered methods, so every registration is visible in one place.
"""

import nnassay.tasks.methods.empirical.deployment  # noqa: F401  providers, float16, int8
import nnassay.tasks.methods.empirical.invalid  # noqa: F401  invalid input
import nnassay.tasks.methods.empirical.methods_blackbox  # noqa: F401  Square Attack, HopSkipJump
import nnassay.tasks.methods.empirical.methods_corruption  # noqa: F401  corruption accuracy, geometric worst case
import nnassay.tasks.methods.empirical.methods_whitebox  # noqa: F401  FGSM, PGD, APGD, AutoAttack-lite, minimal eps
import nnassay.tasks.methods.empirical.ood  # noqa: F401  OOD detection, domain shift
import nnassay.tasks.methods.empirical.tabular  # noqa: F401  tabular perturbations
import nnassay.tasks.methods.empirical.tabular_attack  # noqa: F401  tabular black-box random search
import nnassay.tasks.methods.formal.methods  # noqa: F401  formal: local robustness, VNN-LIB property, max stable space
import nnassay.tasks.methods.statistical.ams  # noqa: F401  rare violations by adaptive multilevel splitting
import nnassay.tasks.methods.statistical.clever  # noqa: F401  CLEVER scores
import nnassay.tasks.methods.statistical.core  # noqa: F401  clean accuracy, noise accuracy / flip rate
import nnassay.tasks.methods.statistical.probabilistic  # noqa: F401  probabilistic robustness (Monte Carlo flip bounds)
import nnassay.tasks.methods.statistical.smoothing  # noqa: F401  randomized smoothing certificates
