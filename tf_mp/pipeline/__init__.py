"""The sequential form (input -> stage 1 -> 2 -> 3 -> output), GPipe micro-batching, and its partitioner."""

from tf_mp.pipeline.partition import best_split
from tf_mp.pipeline.pipeline import (Pipeline, PipelineConfig, PipelineStage,
                                     build_pipeline, pipeline_stage,
                                     theoretical_bubble)

__all__ = [
    'Pipeline', 'PipelineConfig', 'PipelineStage', 'best_split',
    'build_pipeline', 'pipeline_stage', 'theoretical_bubble',
]
