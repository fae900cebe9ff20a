"""Optional native ops: the TfMpConcat concat, with a `tf.concat` fallback."""

from tf_mp.ops.concat import (ConcatInputError, concat_last_axis,
                              custom_concat_available, custom_ops_mode,
                              fused_concat, require_custom_concat)

__all__ = [
    'ConcatInputError', 'concat_last_axis', 'custom_concat_available',
    'custom_ops_mode', 'fused_concat', 'require_custom_concat'
]
