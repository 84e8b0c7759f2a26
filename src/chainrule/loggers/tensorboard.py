"""TensorBoard event files that continue across resumes without duplicated steps."""

from lightning.pytorch.loggers import TensorBoardLogger


class ContinuingTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger that a resumed run rewinds to its checkpoint's step: the next event
    file starts with TensorBoard's purge marker, so the events a killed run wrote at that step or later
    are hidden and the resumed run's take their place."""

    def rewind(self, step: int) -> None:
        if self._experiment is not None:
            self._experiment.close()
            self._experiment = None
        self._kwargs["purge_step"] = step
