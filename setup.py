"""tf_mp: model parallelism in TensorFlow 2, after the source document's example."""

import setuptools

setuptools.setup(
    name='tf_mp',
    version='0.1.0',
    description=('Model parallelism in TensorFlow 2: sub-models on their own '
                 'devices, concat, pipeline stages, tf.distribute.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['tf_mp', 'tf_mp.*']),
    python_requires='>=3.10',
    install_requires=[
        'tensorflow>=2.21,<2.22',
        'numpy',
        'absl-py',
    ],
    extras_require={'test': ['pytest']},
    entry_points={'console_scripts': ['tf-mp-tutorial = tf_mp.tutorial:main']},
)
