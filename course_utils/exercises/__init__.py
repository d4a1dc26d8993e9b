"""The exercises of the course: for each, random inputs, the reference, and known slips.

Each entry is registered with :mod:`course_utils.grading` under the name of
the function the student writes; one module per notebook. Inputs are drawn
with a numpy Generator so that a seed fixes them on every platform; arrays are
float32.
"""

from . import nb01, nb02, nb04  # noqa: F401
from . import nb03  # noqa: F401,E402  (notebook 03)
from . import nb05  # noqa: F401,E402  (notebook 05)
from . import nb06  # noqa: F401,E402  (notebook 06)
from . import nb07  # noqa: F401,E402  (notebook 07)
