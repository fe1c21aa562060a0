"""Training: Petastorm-fed, Horovod-distributed Keras training, model bundles and MLflow.

- :mod:`.plan`: everything one training process needs, as plain picklable data;
- :mod:`.inputs`: the tf.data decode / normalise / augment functions (training and scoring alike);
- :mod:`.worker`: the body of one Horovod process;
- :mod:`.launcher`: runs that body on ``horovod.spark`` or Databricks' ``HorovodRunner``;
- :mod:`.bundle`: a trained model with everything scoring needs, saved and reloaded;
- :mod:`.tracking`, :mod:`.plots`: MLflow logging and the evaluation plots.
"""
