"""A user task whose data never passes through the driver: MNIST as TFRecord shards, read per worker.

Write the shards once (to storage every node mounts, for a cluster), then train::

    python examples/mnist_tfrecord.py /tmp/mnist-shards          # 8 train, 2 validation, 2 test shards
    orchestrator train --task examples/mnist_tfrecord.py:task \\
        --task-param dir=/tmp/mnist-shards --workers 2 --epochs 5

Each worker's ``input_fn`` opens only the shard files of its input pipeline
(``files[pipeline_id::num_pipelines]``), so with 2 workers each reads half of
every split and every example is seen once per epoch. A split needs at least
as many shard files as workers: a worker with none would have nothing to read,
and the orchestrator refuses that before the first epoch.
"""

from __future__ import annotations

import glob
import os
import sys

from orchestrator.tasks import Task

SHARDS = {"train": 8, "validation": 2, "test": 2}


def examples(files: list[str]):
    """(image in [0, 1], label, index) of every example in ``files``; ``index`` is its row in MNIST's split."""
    import tensorflow as tf

    def parse(record):
        example = tf.io.parse_single_example(record, {
            "image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "index": tf.io.FixedLenFeature([], tf.int64)})
        image = tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), (28, 28))
        return tf.cast(image, tf.float32) / 255.0, example["label"], example["index"]

    return tf.data.TFRecordDataset(files).map(parse)


def shard_files(directory: str, split: str, context) -> list[str]:
    """This input pipeline's share of a split's shard files."""
    files = sorted(glob.glob(os.path.join(directory, f"{split}-*.tfrecord")))
    return files[context.input_pipeline_id::context.num_input_pipelines]


def input_fn(p, split, context, batch_size):
    import tensorflow as tf

    dataset = examples(shard_files(p.dir, split, context)).map(lambda image, label, index: (image, label))
    if split == "train":
        dataset = dataset.shuffle(p.shuffle_buffer, seed=p.seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def build_model(p):
    import tensorflow as tf

    return tf.keras.Sequential([
        tf.keras.layers.Flatten(input_shape=(28, 28)),
        tf.keras.layers.Dense(p.units, activation="relu"),
        tf.keras.layers.Dense(10, activation="softmax")])


task = Task(build_model=build_model, input_fn=input_fn,
            params={"dir": "mnist-shards", "units": 128, "shuffle_buffer": 10000, "seed": 0},
            description="MNIST from TFRecord shard files, each worker reading its own")


def write_shards(out: str, arrays, shards: dict[str, int] = SHARDS) -> dict[str, int]:
    """Write the splits of ``arrays`` (uint8 28x28 images) as TFRecord shards; returns examples per split."""
    import tensorflow as tf

    os.makedirs(out, exist_ok=True)
    counts = {}
    for split, count in shards.items():
        x, y = arrays.split(split)
        for shard in range(count):
            path = os.path.join(out, f"{split}-{shard:02d}-of-{count:02d}.tfrecord")
            with tf.io.TFRecordWriter(path + ".tmp") as writer:
                for i in range(shard, len(y), count):
                    writer.write(tf.train.Example(features=tf.train.Features(feature={
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[x[i].tobytes()])),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[i])])),
                        "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
                    })).SerializeToString())
            os.replace(path + ".tmp", path)
        counts[split] = len(y)
    return counts


if __name__ == "__main__":
    # python examples/mnist_tfrecord.py OUT_DIR [mnist.npz]: MNIST as the orchestrator's loader finds it.
    from orchestrator.tasks.mnist import load

    print(write_shards(sys.argv[1] if len(sys.argv) > 1 else "mnist-shards",
                       load(sys.argv[2] if len(sys.argv) > 2 else None)))
