"""The chief's weight histograms (``EpochTensorBoard._log_weights``) against Keras's own, record for record.

The orchestrator buckets weights with TensorBoard's NumPy ``histogram_pb``
instead of Keras's eager ops; a user's TensorBoard must show the same
histograms under the same tags at the same steps.
"""

from __future__ import annotations

import numpy as np


def _histograms(log_dir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    run = EventAccumulator(str(log_dir / "train"), size_guidance={"tensors": 0}).Reload()
    found = {}
    for tag in run.Tags()["tensors"]:
        if tag.endswith("/histogram"):
            plugin = run.SummaryMetadata(tag).plugin_data.plugin_name
            found[tag] = (plugin, [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in run.Tensors(tag)])
    return found


def test_weight_histograms_are_kerass_own_records(tmp_path):
    from orchestrator.worker.callbacks.tensorboard import EpochTensorBoard  # tf-keras, as a worker selects it

    import tensorflow as tf

    rng = np.random.default_rng(0)
    x, y = rng.random((192, 28, 28), dtype=np.float32), rng.integers(0, 10, 192)
    written = {}
    for name, board_class in (("keras", tf.keras.callbacks.TensorBoard), ("ours", EpochTensorBoard)):
        tf.keras.utils.set_random_seed(3)  # the same weights, epoch after epoch, in both runs
        model = tf.keras.Sequential([tf.keras.layers.Flatten(input_shape=(28, 28)),
                                     tf.keras.layers.Dense(16, activation="relu", name="hidden"),
                                     tf.keras.layers.Dense(10, name="out")])
        model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        board = board_class(log_dir=str(tmp_path / name), histogram_freq=1, write_graph=False, profile_batch=0)
        model.fit(x, y, batch_size=64, epochs=3, shuffle=False, callbacks=[board], verbose=0)
        written[name] = _histograms(tmp_path / name)

    keras, ours = written["keras"], written["ours"]
    assert sorted(ours) == sorted(keras) == ["hidden/bias_0/histogram", "hidden/kernel_0/histogram",
                                            "out/bias_0/histogram", "out/kernel_0/histogram"]
    for tag, (plugin, records) in keras.items():
        assert ours[tag][0] == plugin == "histograms"
        assert [step for step, _ in ours[tag][1]] == [step for step, _ in records] == [0, 1, 2]
        for (_, theirs), (_, mine) in zip(records, ours[tag][1]):
            assert mine.shape == theirs.shape == (30, 3)  # (left edge, right edge, count) per bucket
            np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-7)
            assert mine[:, 2].sum() == theirs[:, 2].sum()  # every weight counted once
