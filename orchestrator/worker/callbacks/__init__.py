"""Keras callbacks made safe under MultiWorkerMirroredStrategy, one concept per file.

Every worker gets the same callbacks that steer training (schedule, early
stopping, reporting), built from the same spec: a worker that stopped one epoch
before the others would leave them waiting in the next all-reduce forever.
Callbacks that only write files (TensorBoard, the best-weights checkpoint)
run on the chief alone.
"""
