"""A module whose import fails, as a factory's missing dependency would."""

import a_package_that_is_not_installed  # noqa: F401
