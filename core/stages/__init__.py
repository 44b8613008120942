"""The pipeline's stages, one small module each, in the order they run.

A stage is an object with a ``name``, the record ``file`` it writes (or None), ``reset(store)`` for
``--from`` and ``async run(ctx) -> info`` (``info`` goes into the manifest's stage status and the summary).
Stages read their inputs from the run store and do every unit of work through the
:class:`~synthagent.core.runtime.Runtime`; :class:`~synthagent.core.pipeline.Pipeline` only runs them in order.
"""

from __future__ import annotations

from synthagent.core.stages.base import Stage, StageContext
from synthagent.core.stages.export import ExportStage, rl_row, sft_row
from synthagent.core.stages.generate import GenerateStage
from synthagent.core.stages.rubric import RubricStage
from synthagent.core.stages.score import ScoreStage
from synthagent.core.stages.simulate import SimulateStage

__all__ = ["Stage", "StageContext", "PIPELINE", "GenerateStage", "SimulateStage", "RubricStage", "ScoreStage",
           "ExportStage", "sft_row", "rl_row"]

#: The stages of ``synth run``, in order (names equal :data:`synthagent.core.config.STAGES`).
PIPELINE: tuple[Stage, ...] = (GenerateStage(), SimulateStage(), RubricStage(), ScoreStage(), ExportStage())
