"""A tiny character-level language model split over devices by tensor parallelism."""

from tf_mp.lm.config import (LMConfig, check_lm_fits, check_tensor_parallel,
                             default_tensor_parallel)
from tf_mp.lm.layers import (Block, Embedding, LayerNorm, ParallelAttention,
                             ParallelMLP, Shards)
from tf_mp.lm.model import TinyLM, build_lm
from tf_mp.lm.text import (CharVocab, Corpus, builtin_corpus, load_text,
                           prepare_corpus, unigram_entropy)
from tf_mp.lm.train import LMCheckpoints, LMTrainer, check_sampling, generate

__all__ = [
    'Block', 'CharVocab', 'Corpus', 'Embedding', 'LMCheckpoints', 'LMConfig',
    'LMTrainer', 'LayerNorm', 'ParallelAttention', 'ParallelMLP', 'Shards',
    'TinyLM', 'build_lm', 'builtin_corpus', 'check_lm_fits', 'check_sampling',
    'check_tensor_parallel',
    'default_tensor_parallel', 'generate', 'load_text', 'prepare_corpus',
    'unigram_entropy'
]
