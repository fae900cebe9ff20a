"""tf_mp: model parallelism in TensorFlow 2, after the source document's example."""

import os
import re

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))


def read(*parts: str) -> str:
  with open(os.path.join(HERE, *parts), encoding='utf-8') as f:
    return f.read()


# One version, in tf_mp/version.py; read as text, so that setup.py never
# imports tf_mp (and with it TensorFlow).
VERSION = re.search(r"^__version__ = '([^']+)'$", read('tf_mp', 'version.py'),
                    re.M).group(1)

setuptools.setup(
    name='tf_mp',
    version=VERSION,
    description=('Model parallelism in TensorFlow 2: sub-models on their own '
                 'devices, concat, pipeline stages, tf.distribute.'),
    long_description=read('README.md'),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['tf_mp', 'tf_mp.*']),
    # The custom op's sources, so that `python -m tf_mp.ops.build` works from
    # an installed package; the libraries it builds go to a per-user cache and
    # are never shipped (a stale one in a checkout is excluded below).
    package_data={'tf_mp.ops': ['*.cc', '*.cu', '*.h']},
    exclude_package_data={'': ['*.so', 'build_info.json']},
    python_requires='>=3.10',
    install_requires=[
        'tensorflow>=2.21,<2.22',
        'numpy',
        'absl-py',
    ],
    extras_require={'test': ['pytest', 'pytest-xdist', 'setuptools', 'wheel']},
    entry_points={'console_scripts': ['tf-mp-tutorial = tf_mp.tutorial:main']},
)
