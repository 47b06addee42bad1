"""The explicit list of method modules; importing one registers its methods.

Add a module here when it defines registered methods, so every registration is visible in one place.
"""

import tasks.statistical.core  # noqa: F401  clean accuracy, noise accuracy / flip rate
