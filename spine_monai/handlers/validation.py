"""Validation that always ends a run with a validated, saved model."""

from __future__ import annotations

from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler as _MonaiValidationHandler


class ValidationHandler(_MonaiValidationHandler):
    """MONAI's :class:`~monai.handlers.ValidationHandler` that also validates after the last epoch.

    With MONAI's handler, a run shorter than ``interval`` epochs never validates, so the best-model checkpoint
    that evaluation and inference look for is never written; a run whose length is not a multiple of
    ``interval`` leaves its last epochs unjudged. This handler adds one validation after the final epoch when
    the interval did not already land on it.

    Args:
        args: passed to MONAI's ``ValidationHandler``.
        kwargs: passed to MONAI's ``ValidationHandler``.
    """

    def attach(self, engine: Engine) -> None:
        """Attach MONAI's schedule and the validation after the final epoch.

        Args:
            engine: the trainer.
        """
        super().attach(engine)
        if self.epoch_level:
            engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=self._last_and_unscheduled), self)

    def _last_and_unscheduled(self, engine: Engine, epoch: int) -> bool:
        return epoch == engine.state.max_epochs and epoch % self.interval != 0
