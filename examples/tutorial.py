"""The source document's model-parallel program, in TensorFlow 2.

Three sub-models on three devices read the same [batch, 128] input; their
outputs are concatenated on the last axis and a head makes 10 logits; Adam
(learning rate 0.001) trains it for 10000 steps, printing the document's
`Step: N Loss: X` line every 100 steps. First it prints where each part really
lives, last a one-line summary. The program lives in tf_mp/tutorial.py (also
installed as the `tf-mp-tutorial` command); this file runs it from a clone.

  python examples/tutorial.py                      # the document's run
  python examples/tutorial.py --devices cpu:0,cpu:1,cpu:2 --steps 500
  python examples/tutorial.py --data my.npz --export_dir /tmp/model
  python examples/tutorial.py --strategy mirrored \\
      --devices "cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5" --checkpoint_dir /tmp/ckpt
"""

from tf_mp import tutorial

if __name__ == '__main__':
  tutorial.main(__doc__)
