"""Models braincam did not train, described by a YAML model spec (:mod:`.spec`), loaded and
checked against it (:mod:`.load`) and wrapped to take braincam's input (:mod:`.net`)."""

from braincam.models.foreign.load import Capabilities, ForeignModel, load_foreign
from braincam.models.foreign.spec import InputSpec, ModelSpec, is_spec, load_spec

__all__ = ["Capabilities", "ForeignModel", "InputSpec", "ModelSpec", "is_spec", "load_foreign",
           "load_spec"]
