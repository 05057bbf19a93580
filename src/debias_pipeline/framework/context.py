"""The project's Kedro context: Kedro's, with parameter-validation errors that name the
whole dotted parameter."""

from __future__ import annotations

from typing import Any

from attrs import define
from kedro.framework.context import KedroContext
from kedro.validation.exceptions import ParameterValidationError

from debias_pipeline.config.params import kedro_validation_message


@define(slots=False)
class ProjectContext(KedroContext):
    """Kedro validates every ``params:`` input typed with a ``Params`` model before the
    first node; a block's model does not know the block's key, so its messages hold a
    placeholder that this context replaces (``parameter 'preprocessing.duplicates'
    must be one of ...``)."""

    def _get_validated_params(self) -> dict[str, Any]:
        try:
            return super()._get_validated_params()
        except ParameterValidationError as error:
            raise ParameterValidationError(kedro_validation_message(str(error))) from None
