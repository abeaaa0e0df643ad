"""An object whose unpickling would act (create a directory): what a checkpoint must never get to run."""

from __future__ import annotations

import os


class Payload:
    """Unpickling this would create the directory ``target``: the kind of object that must be refused."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))
